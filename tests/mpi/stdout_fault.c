/* A failing standard output, preloaded (LD_PRELOAD) into one process of the program by tests/mpi/one_rank.sh:
 * fflush(stdout) fails with EIO; every other stream flushes as usual. Under mpirun every process checks its standard
 * output before rank 0 commits the outputs, and the processes agree on the result: the run fails on every process
 * with the failing rank's message, and no output changes. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>

int fflush(FILE* stream) {
  static int (*next)(FILE*) = NULL;
  if (stream == stdout) {
    errno = EIO;
    return EOF;
  }
  if (next == NULL) next = (int (*)(FILE*))dlsym(RTLD_NEXT, "fflush");
  return next(stream);
}
