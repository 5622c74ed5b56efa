/* Shared helpers for the Check test binaries. */
#ifndef NN_TESTUTIL_H
#define NN_TESTUTIL_H

#include <check.h>
#include <stdio.h>
#include <stdlib.h>

/* Directory of the shipped test data ($NN_TEST_DATA, set by make check). */
static inline const char *test_data_dir(void) {
  const char *d = getenv("NN_TEST_DATA");
  return d && *d ? d : "tests/data";
}

/* "<test data dir>/<name>" in a static buffer (tests are single-threaded). */
static inline const char *test_data_path(const char *name) {
  static char buf[4096];
  snprintf(buf, sizeof buf, "%s/%s", test_data_dir(), name);
  return buf;
}

/* Directory of the built plugins ($NN_PLUGIN_PATH). */
static inline const char *test_plugin_path(void) {
  const char *d = getenv("NN_PLUGIN_PATH");
  return d && *d ? d : "plugins/.libs";
}

/* Run one suite with CK_ENV verbosity; exit status for the test driver. */
static inline int test_run_suite(Suite *s) {
  SRunner *sr = srunner_create(s);
  srunner_run_all(sr, CK_ENV);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

#endif
