/* Checks shared by the C ABI tests (C99): each failed check prints where and why and counts in `failures`; the
 * program exits nonzero when any failed. */
#ifndef DIFFSAMPLE_TESTS_C_CHECK_H
#define DIFFSAMPLE_TESTS_C_CHECK_H

#include <diffsample/diffsample.h>

#include <stdio.h>
#include <string.h>

static int failures = 0;

#define CHECK(cond)                                                            \
  do {                                                                         \
    if (!(cond)) {                                                             \
      fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
      ++failures;                                                              \
    }                                                                          \
  } while (0)

#define CHECK_OK(call)                                                                                   \
  do {                                                                                                   \
    ds_status status_ = (call);                                                                          \
    if (status_ != DS_SUCCESS) {                                                                         \
      fprintf(stderr, "%s:%d: %s returned %s: %s\n", __FILE__, __LINE__, #call, ds_status_name(status_), \
              ds_last_error());                                                                          \
      ++failures;                                                                                        \
    }                                                                                                    \
  } while (0)

/* The call must fail with `expected` and a last-error message containing `needle`. */
static inline void expect_error(ds_status got, ds_status expected, const char* needle, const char* what, int line) {
  if (got != expected) {
    fprintf(stderr, "line %d: %s: expected %s, got %s (%s)\n", line, what, ds_status_name(expected),
            ds_status_name(got), ds_last_error());
    ++failures;
  } else if (strstr(ds_last_error(), needle) == NULL) {
    fprintf(stderr, "line %d: %s: message \"%s\" does not name \"%s\"\n", line, what, ds_last_error(), needle);
    ++failures;
  }
}
#define EXPECT_ERROR(call, expected, needle) expect_error((call), (expected), (needle), #call, __LINE__)

#endif
