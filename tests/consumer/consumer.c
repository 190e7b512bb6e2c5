/* Built against an installed prefix through pkg-config (cc consumer.c $(pkg-config --cflags --libs diffsample)):
 * plain C99, no CUDA headers. Samples a grid mixture, runs a few MALA steps and scores them, on the CPU. */
#include <stdio.h>
#include <stdlib.h>

#include <diffsample/diffsample.h>

int main(void) {
  enum { n = 1000 };
  const ds_execution cpu = {DS_EXECUTOR_CPU, NULL};
  const ds_channel prior = {1.0, 0.0};
  ds_mixture* target = NULL;
  ds_langevin_options options;
  ds_langevin_report report;
  static float x[n * 2], exact[n * 2];
  double sw = 0;

  if (ds_grid_mixture_create(2, 5, 2.0, 0.25, NULL, 0, &target) != DS_SUCCESS ||
      ds_mixture_sample(target, x, n, prior, 1, NULL, 0, cpu, NULL) != DS_SUCCESS ||
      ds_mixture_sample(target, exact, n, prior, 2, NULL, 0, cpu, NULL) != DS_SUCCESS) {
    fprintf(stderr, "consumer.c: %s\n", ds_last_error());
    return 1;
  }
  if (ds_langevin_options_init(&options, sizeof options) != DS_SUCCESS) return 1;
  options.steps = 10;
  options.step_size = 0.03;
  if (ds_langevin(target, x, n, &options, NULL, NULL, cpu, NULL, 0, &report) != DS_SUCCESS ||
      ds_sliced_wasserstein(x, n, exact, n, 2, 32, 0, 1, &sw) != DS_SUCCESS) {
    fprintf(stderr, "consumer.c: %s\n", ds_last_error());
    ds_mixture_destroy(target);
    return 1;
  }
  /* The expected failure path: a bad argument gives a status and a message naming it. */
  if (ds_mixture_sample(target, NULL, n, prior, 1, NULL, 0, cpu, NULL) != DS_INVALID_ARGUMENT) return 1;
  printf("consumer.c: diffsample %s ran %s, sliced W1 %.4f; expected error: %s\n", ds_version(),
         ds_executor_name(report.ran), sw, ds_last_error());
  ds_mixture_destroy(target);
  return report.ran == DS_EXECUTOR_CPU && sw < 0.5 ? 0 : 1;
}
