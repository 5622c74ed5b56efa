/* Plugin loading: search path, ABI checks, kind checks and the messages a
 * user sees when something is wrong. */
#include <config.h>

#include <stddef.h>

#include <string.h>
#include <unistd.h>

#include <gsl/gsl_errno.h>

#include <nn/registry.h>

#include "testutil.h"

/* "<fixture dir>/<name>.so" for the deliberately broken test plugins. */
static const char *fixture(const char *name) {
  static char buf[2048];
  const char *d = getenv("NN_FIXTURE_DIR");
  snprintf(buf, sizeof buf, "%s/%s.so", d && *d ? d : "tests/fixtures/.libs",
           name);
  return buf;
}

START_TEST(test_open_models_and_optimizer_by_name) {
  const char *models[] = {"softmax", "twolayer"};
  for (size_t i = 0; i < 2; i++) {
    nn_loaded *p = NULL;
    nn_error err = {0};
    ck_assert_msg(nn_plugin_open(&p, models[i], NN_KIND_MODEL, test_plugin_path(),
                                 &err) == NN_OK, "%s", err.msg);
    const nn_plugin *d = nn_loaded_desc(p);
    ck_assert_str_eq(d->name, models[i]);
    ck_assert_uint_eq(d->kind, NN_KIND_MODEL);
    ck_assert_ptr_nonnull(d->model);
    ck_assert_ptr_nonnull(strstr(nn_loaded_path(p), models[i]));
    nn_plugin_close(p);
  }
  nn_loaded *p = NULL;
  nn_error err = {0};
  ck_assert_int_eq(nn_plugin_open(&p, "sgd", NN_KIND_OPTIMIZER, test_plugin_path(),
                                  &err), NN_OK);
  ck_assert_uint_eq(nn_loaded_desc(p)->kind, NN_KIND_OPTIMIZER);
  nn_plugin_close(p);
  nn_plugin_close(NULL); /* NULL-safe */
}
END_TEST

START_TEST(test_wrong_kind_is_refused) {
  nn_loaded *p = NULL;
  nn_error err = {0};
  ck_assert_int_eq(nn_plugin_open(&p, "sgd", NN_KIND_MODEL, test_plugin_path(),
                                  &err), NN_EPLUGIN);
  ck_assert_ptr_null(p);
  ck_assert_msg(strstr(err.msg, "optimizer") && strstr(err.msg, "a model"), "%s",
                err.msg);
}
END_TEST

START_TEST(test_unknown_name_lists_available) {
  nn_loaded *p = NULL;
  nn_error err = {0};
  ck_assert_int_eq(nn_plugin_open(&p, "twolayers", NN_KIND_MODEL,
                                  test_plugin_path(), &err), NN_ENOTFOUND);
  ck_assert_ptr_null(p);
  ck_assert_msg(strstr(err.msg, "'twolayers'") && strstr(err.msg, "softmax") &&
                strstr(err.msg, "twolayer"), "%s", err.msg);
  /* Only models are offered when a model is wanted. */
  ck_assert_msg(strstr(err.msg, "sgd") == NULL, "%s", err.msg);
}
END_TEST

START_TEST(test_other_abi_major_is_refused_with_both_versions) {
  nn_loaded *p = NULL;
  nn_error err = {0};
  ck_assert_int_eq(nn_plugin_open(&p, fixture("bad_major"), 0, NULL, &err),
                   NN_EABI);
  ck_assert_ptr_null(p);
  char theirs[32], ours[32];
  snprintf(theirs, sizeof theirs, "ABI %u.0", NN_ABI_MAJOR + 1);
  snprintf(ours, sizeof ours, "ABI %u.%u", NN_ABI_MAJOR, NN_ABI_MINOR);
  ck_assert_msg(strstr(err.msg, theirs) && strstr(err.msg, ours) &&
                strstr(err.msg, "bad_major.so"), "%s", err.msg);
}
END_TEST

START_TEST(test_newer_minor_is_refused) {
  nn_loaded *p = NULL;
  nn_error err = {0};
  ck_assert_int_eq(nn_plugin_open(&p, fixture("newer_minor"), 0, NULL, &err),
                   NN_EABI);
  char theirs[32];
  snprintf(theirs, sizeof theirs, "ABI %u.%u", NN_ABI_MAJOR, NN_ABI_MINOR + 1);
  ck_assert_msg(strstr(err.msg, theirs) != NULL, "%s", err.msg);
}
END_TEST

START_TEST(test_missing_symbol_is_not_a_plugin) {
  nn_loaded *p = NULL;
  nn_error err = {0};
  ck_assert_int_eq(nn_plugin_open(&p, fixture("no_symbol"), 0, NULL, &err),
                   NN_EPLUGIN);
  ck_assert_msg(strstr(err.msg, "not an nnrun plugin") &&
                strstr(err.msg, "no_symbol.so"), "%s", err.msg);
}
END_TEST

START_TEST(test_loader_reason_is_shown) {
  char dir[] = "/tmp/nn_check_registry_XXXXXX";
  ck_assert_ptr_nonnull(mkdtemp(dir));
  char path[256];
  snprintf(path, sizeof path, "%s/garbage.so", dir);
  FILE *f = fopen(path, "w");
  ck_assert_ptr_nonnull(f);
  fputs("this is not an ELF file\n", f);
  fclose(f);
  nn_loaded *p = NULL;
  nn_error err = {0};
  ck_assert_int_eq(nn_plugin_open(&p, "garbage", 0, dir, &err), NN_EPLUGIN);
  /* dlopen's own words, not a generic "file not found". */
  ck_assert_msg(strstr(err.msg, "garbage.so") &&
                (strstr(err.msg, "ELF") || strstr(err.msg, "too short")),
                "%s", err.msg);
  unlink(path);
  rmdir(dir);
}
END_TEST

START_TEST(test_missing_explicit_path) {
  nn_loaded *p = NULL;
  nn_error err = {0};
  ck_assert_int_eq(nn_plugin_open(&p, "/nonexistent/x.so", 0, NULL, &err),
                   NN_ENOTFOUND);
  ck_assert_msg(strstr(err.msg, "/nonexistent/x.so") != NULL, "%s", err.msg);
}
END_TEST

START_TEST(test_search_path_order_first_wins) {
  /* A directory earlier on the path shadows a later one. */
  char dir[] = "/tmp/nn_check_registry_XXXXXX";
  ck_assert_ptr_nonnull(mkdtemp(dir));
  char src[2048], dst[512], search[4096];
  snprintf(src, sizeof src, "%s/sgd.so", test_plugin_path());
  snprintf(dst, sizeof dst, "%s/sgd.so", dir);
  ck_assert_int_eq(symlink(src, dst), 0);
  snprintf(search, sizeof search, "/nonexistent:%s:%s", dir, test_plugin_path());
  nn_loaded *p = NULL;
  nn_error err = {0};
  ck_assert_int_eq(nn_plugin_open(&p, "sgd", NN_KIND_OPTIMIZER, search, &err),
                   NN_OK);
  ck_assert_str_eq(nn_loaded_path(p), dst);
  nn_plugin_close(p);
  unlink(dst);
  rmdir(dir);
}
END_TEST

START_TEST(test_list_plugins) {
  nn_plugin_info *list = NULL;
  size_t n = 0;
  nn_error err = {0};
  ck_assert_int_eq(nn_plugin_list(test_plugin_path(), &list, &n, &err), NN_OK);
  ck_assert_uint_ge(n, 3);
  int found = 0;
  for (size_t i = 0; i < n; i++) {
    if (i) ck_assert_int_lt(strcmp(list[i - 1].name, list[i].name), 0);
    if (!strcmp(list[i].name, "softmax") || !strcmp(list[i].name, "twolayer")) {
      ck_assert_uint_eq(list[i].kind, NN_KIND_MODEL);
      found++;
    }
    if (!strcmp(list[i].name, "sgd")) {
      ck_assert_uint_eq(list[i].kind, NN_KIND_OPTIMIZER);
      found++;
    }
    if (list[i].kind) ck_assert_str_eq(list[i].version, "0.1.0");
  }
  ck_assert_int_eq(found, 3);
  free(list);
  /* The fixtures directory lists its broken plugins with their problems,
   * and bad_stepper (which loads; it misbehaves only when training). */
  char dir[2048];
  snprintf(dir, sizeof dir, "%s", fixture("x"));
  *strrchr(dir, '/') = '\0';
  ck_assert_int_eq(nn_plugin_list(dir, &list, &n, &err), NN_OK);
  ck_assert_uint_eq(n, 4);
  for (size_t i = 0; i < n; i++) {
    if (!strcmp(list[i].name, "bad_stepper")) {
      ck_assert_uint_eq(list[i].kind, NN_KIND_MODEL);
      continue;
    }
    ck_assert_uint_eq(list[i].kind, 0);
    ck_assert_str_ne(list[i].problem, "");
  }
  free(list);
}
END_TEST

/* Which optional ABI paths each pair of plugins gets. */
START_TEST(test_optional_paths) {
  nn_error err = {0};
  nn_loaded *tl = NULL, *sm = NULL, *sgd = NULL, *bad = NULL;
  ck_assert_int_eq(nn_plugin_open(&tl, "twolayer", NN_KIND_MODEL,
                                  test_plugin_path(), &err), NN_OK);
  ck_assert_int_eq(nn_plugin_open(&sm, "softmax", NN_KIND_MODEL,
                                  test_plugin_path(), &err), NN_OK);
  ck_assert_int_eq(nn_plugin_open(&sgd, "sgd", NN_KIND_OPTIMIZER,
                                  test_plugin_path(), &err), NN_OK);
  ck_assert_int_eq(nn_plugin_open(&bad, fixture("bad_stepper"), NN_KIND_MODEL,
                                  NULL, &err), NN_OK);
  ck_assert(nn_plugin_takes_csr(nn_loaded_desc(tl)));
  ck_assert(nn_plugin_takes_csr(nn_loaded_desc(sm)));
  ck_assert(nn_plugins_fuse_step(nn_loaded_desc(tl), nn_loaded_desc(sgd)));
  /* softmax keeps the separate step (no backward_step). */
  ck_assert(!nn_plugins_fuse_step(nn_loaded_desc(sm), nn_loaded_desc(sgd)));
  ck_assert(nn_plugins_fuse_step(nn_loaded_desc(bad), nn_loaded_desc(sgd)));
  /* The 1.4 pipeline: twolayer has backward_step_forward, the fixture
   * (NULL there) and softmax do not; sgd steps blocks. */
  ck_assert(nn_plugins_pipeline(nn_loaded_desc(tl), nn_loaded_desc(sgd)));
  ck_assert(!nn_plugins_pipeline(nn_loaded_desc(bad), nn_loaded_desc(sgd)));
  ck_assert(!nn_plugins_pipeline(nn_loaded_desc(sm), nn_loaded_desc(sgd)));
  ck_assert(nn_plugin_steps_blocks(nn_loaded_desc(sgd)));
  /* A 1.3 optimizer table: no step_block, whatever lies beyond its end. */
  nn_optim_ops oldo = *nn_loaded_desc(sgd)->optim;
  oldo.size = (uint32_t)offsetof(nn_optim_ops, step_block);
  nn_plugin odesc = *nn_loaded_desc(sgd);
  odesc.optim = &oldo;
  ck_assert(!nn_plugin_steps_blocks(&odesc));
  ck_assert(nn_plugins_pipeline(nn_loaded_desc(tl), &odesc));
  /* ABI 1.5: sgd tells its rule; a 1.4 table (ending before sgd_rule)
   * does not, whatever lies beyond its end. */
  ck_assert(nn_plugin_tells_sgd(nn_loaded_desc(sgd)));
  ck_assert(!nn_plugin_tells_sgd(&odesc));
  oldo.size = (uint32_t)offsetof(nn_optim_ops, sgd_rule);
  ck_assert(!nn_plugin_tells_sgd(&odesc));
  ck_assert(nn_plugin_steps_blocks(&odesc));
  /* A model table from before ABI 1.2 (its size ends before the CSR ops)
   * takes neither path, whatever lies beyond its end. */
  nn_model_ops old = *nn_loaded_desc(tl)->model;
  old.size = (uint32_t)offsetof(nn_model_ops, forward_csr);
  nn_plugin desc = *nn_loaded_desc(tl);
  desc.model = &old;
  ck_assert(!nn_plugin_takes_csr(&desc));
  ck_assert(!nn_plugins_fuse_step(&desc, nn_loaded_desc(sgd)));
  /* A 1.2 model: CSR, but no fused step. */
  old.size = (uint32_t)offsetof(nn_model_ops, backward_step);
  ck_assert(nn_plugin_takes_csr(&desc));
  ck_assert(!nn_plugins_fuse_step(&desc, nn_loaded_desc(sgd)));
  /* A 1.3 model: the fused step, but no pipeline. */
  old.size = (uint32_t)offsetof(nn_model_ops, backward_step_forward);
  ck_assert(nn_plugins_fuse_step(&desc, nn_loaded_desc(sgd)));
  ck_assert(!nn_plugins_pipeline(&desc, nn_loaded_desc(sgd)));
  nn_plugin_close(tl);
  nn_plugin_close(sm);
  nn_plugin_close(sgd);
  nn_plugin_close(bad);
}
END_TEST

START_TEST(test_kind_names) {
  ck_assert_str_eq(nn_kind_name(NN_KIND_MODEL), "model");
  ck_assert_str_eq(nn_kind_name(NN_KIND_OPTIMIZER), "optimizer");
  char buf[4096];
  ck_assert_ptr_nonnull(strstr(nn_plugin_default_path(buf, sizeof buf),
                               nn_plugin_dir()));
}
END_TEST

int main(void) {
  gsl_set_error_handler_off();
  Suite *s = suite_create("registry");
  TCase *tc = tcase_create("registry");
  tcase_add_test(tc, test_open_models_and_optimizer_by_name);
  tcase_add_test(tc, test_wrong_kind_is_refused);
  tcase_add_test(tc, test_unknown_name_lists_available);
  tcase_add_test(tc, test_other_abi_major_is_refused_with_both_versions);
  tcase_add_test(tc, test_newer_minor_is_refused);
  tcase_add_test(tc, test_missing_symbol_is_not_a_plugin);
  tcase_add_test(tc, test_loader_reason_is_shown);
  tcase_add_test(tc, test_missing_explicit_path);
  tcase_add_test(tc, test_search_path_order_first_wins);
  tcase_add_test(tc, test_list_plugins);
  tcase_add_test(tc, test_kind_names);
  tcase_add_test(tc, test_optional_paths);
  suite_add_tcase(s, tc);
  return test_run_suite(s);
}
