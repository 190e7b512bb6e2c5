/* A failing standard output, preloaded (LD_PRELOAD) into one process of the program by tests/mpi/one_rank.sh:
 * fflush(stdout) fails with EIO; every other stream flushes as usual. The program checks its standard output at the
 * end of every subcommand (after the last collective of a run under mpirun), so the process fails there alone: the
 * one failure after MPI has started that no agreement covers, which ends the job through the MPI_Abort fallback. */
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
