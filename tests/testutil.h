/* SPDX-License-Identifier: GPL-3.0-or-later */
/* Shared helpers for the Check test binaries. */
#ifndef NN_TESTUTIL_H
#define NN_TESTUTIL_H

#include <check.h>
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>

#include <nn/plugin.h>

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

/* A plugin opened straight from the build tree, without the registry's
 * checks (tests of the plugins themselves): the dlopen handle (owned,
 * closed by test_plugin_unload) and its descriptor (inside the handle's
 * image). */
typedef struct test_plugin {
  void *handle;
  const nn_plugin *desc;
} test_plugin;

static inline test_plugin test_plugin_load(const char *name) {
  char path[4096];
  snprintf(path, sizeof path, "%s/%s.so", test_plugin_path(), name);
  test_plugin l;
  l.handle = dlopen(path, RTLD_NOW | RTLD_LOCAL);
  ck_assert_msg(l.handle != NULL, "dlopen %s: %s", path, dlerror());
  l.desc = (const nn_plugin *)dlsym(l.handle, NN_PLUGIN_SYMBOL);
  ck_assert_msg(l.desc != NULL, "dlsym %s: %s", path, dlerror());
  return l;
}

static inline void test_plugin_unload(test_plugin *l) {
  if (l->handle) dlclose(l->handle);
  *l = (test_plugin){NULL, NULL};
}

/* A scratch directory under /tmp for the current test (made by
 * test_tmpdir_make in a Check fixture's setup, removed with its contents by
 * test_tmpdir_remove in the teardown).  Tests never write into the source
 * tree. */
static char test_tmpdir[256];

static inline void test_tmpdir_make(const char *tag) {
  snprintf(test_tmpdir, sizeof test_tmpdir, "/tmp/nn_check_%s_XXXXXX", tag);
  ck_assert_ptr_nonnull(mkdtemp(test_tmpdir));
}

static inline void test_tmpdir_remove(void) {
  char cmd[512];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", test_tmpdir);
  ck_assert_int_eq(system(cmd), 0);
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
