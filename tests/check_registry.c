/* SPDX-License-Identifier: GPL-3.0-or-later */
/* Plugin loading: search path, ABI checks, kind checks and the messages a
 * user sees when something is wrong. */
#include <config.h>

#include <stddef.h>

#include <dlfcn.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gsl/gsl_errno.h>
#include <gsl/gsl_rng.h>

#include <nn/plugin_ext.h>
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
  /* From the file names alone (their kinds would take loading them), the
   * closest first, and a typo gets a suggestion. */
  ck_assert_msg(strstr(err.msg, "did you mean 'twolayer'?") &&
                strstr(err.msg, "available: twolayer, "), "%s", err.msg);
  ck_assert_int_eq(nn_plugin_open(&p, "resnet", NN_KIND_MODEL,
                                  test_plugin_path(), &err), NN_ENOTFOUND);
  ck_assert_msg(!strstr(err.msg, "did you mean"), "%s", err.msg);
}
END_TEST

/* A name that matches no file loads nothing: marker.so leaves a file
 * behind when its constructor runs (the listing, which does load every
 * plugin, shows that it would). */
START_TEST(test_unknown_name_loads_nothing) {
  char dir[] = "/tmp/nn_check_registry_XXXXXX", marker[300];
  ck_assert_ptr_nonnull(mkdtemp(dir));
  snprintf(marker, sizeof marker, "%s/loaded", dir);
  ck_assert_int_eq(setenv("NN_TEST_MARKER", marker, 1), 0);
  char fixtures[2048];
  snprintf(fixtures, sizeof fixtures, "%s", fixture("x"));
  *strrchr(fixtures, '/') = '\0';
  nn_loaded *p = NULL;
  nn_error err = {0};
  ck_assert_int_eq(nn_plugin_open(&p, "markr", 0, fixtures, &err),
                   NN_ENOTFOUND);
  ck_assert_msg(strstr(err.msg, "did you mean 'marker'?"), "%s", err.msg);
  ck_assert_int_ne(access(marker, F_OK), 0);
  nn_plugin_info *list = NULL;
  size_t n = 0;
  ck_assert_int_eq(nn_plugin_list(fixtures, &list, &n, &err), NN_OK);
  free(list);
  ck_assert_int_eq(access(marker, F_OK), 0);
  unlink(marker);
  rmdir(dir);
}
END_TEST

/* A copy of a fixture plugin in a scratch directory of its own. */
static void copy_plugin(const char *name, const char *dir, char *dst,
                        size_t size) {
  char cmd[4096];
  snprintf(dst, size, "%s/%s.so", dir, name);
  snprintf(cmd, sizeof cmd, "cp '%s' '%s'", fixture(name), dst);
  ck_assert_int_eq(system(cmd), 0);
}

/* Files others could replace are refused before they are loaded, naming
 * the file or directory and why; NN_PLUGIN_ALLOW_WRITABLE=1 lifts it. */
START_TEST(test_writable_plugins_are_refused) {
  char dir[] = "/tmp/nn_check_registry_XXXXXX", path[300];
  ck_assert_ptr_nonnull(mkdtemp(dir));
  copy_plugin("bad_stepper", dir, path, sizeof path);
  unsetenv("NN_PLUGIN_ALLOW_WRITABLE");
  nn_loaded *p = NULL;
  nn_error err = {0};
  ck_assert_int_eq(chmod(path, 0755), 0);
  ck_assert_int_eq(nn_plugin_open(&p, "bad_stepper", 0, dir, &err), NN_OK);
  nn_plugin_close(p);
  /* The file itself. */
  ck_assert_int_eq(chmod(path, 0777), 0);
  ck_assert_int_eq(nn_plugin_open(&p, "bad_stepper", 0, dir, &err),
                   NN_EPLUGIN);
  ck_assert_ptr_null(p);
  ck_assert_msg(strstr(err.msg, path) && strstr(err.msg, "world-writable") &&
                strstr(err.msg, "NN_PLUGIN_ALLOW_WRITABLE=1"), "%s", err.msg);
  ck_assert_int_eq(setenv("NN_PLUGIN_ALLOW_WRITABLE", "1", 1), 0);
  ck_assert_int_eq(nn_plugin_open(&p, "bad_stepper", 0, dir, &err), NN_OK);
  nn_plugin_close(p);
  unsetenv("NN_PLUGIN_ALLOW_WRITABLE");
  /* Its directory, unless it has the sticky bit. */
  ck_assert_int_eq(chmod(path, 0755), 0);
  ck_assert_int_eq(chmod(dir, 0777), 0);
  ck_assert_int_eq(nn_plugin_open(&p, "bad_stepper", 0, dir, &err),
                   NN_EPLUGIN);
  ck_assert_msg(strstr(err.msg, "the directory") && strstr(err.msg, dir) &&
                strstr(err.msg, "without the sticky bit"), "%s", err.msg);
  ck_assert_int_eq(chmod(dir, 01777), 0);
  ck_assert_int_eq(nn_plugin_open(&p, "bad_stepper", 0, dir, &err), NN_OK);
  nn_plugin_close(p);
  /* The listing does not load a refused file either; it says why. */
  ck_assert_int_eq(chmod(dir, 0777), 0);
  nn_plugin_info *list = NULL;
  size_t n = 0;
  ck_assert_int_eq(nn_plugin_list(dir, &list, &n, &err), NN_OK);
  ck_assert_uint_eq(n, 1);
  ck_assert_uint_eq(list[0].kind, 0);
  ck_assert_msg(strstr(list[0].problem, "world-writable"), "%s",
                list[0].problem);
  free(list);
  ck_assert_int_eq(chmod(dir, 0700), 0);
  /* Owned by another user (only root can make such a file, and not in
   * every sandbox). */
  if (geteuid() == 0 && chown(path, 65534, 65534) == 0) {
    ck_assert_int_eq(nn_plugin_open(&p, "bad_stepper", 0, dir, &err),
                     NN_EPLUGIN);
    ck_assert_msg(strstr(err.msg, "owned by user 65534"), "%s", err.msg);
  }
  unlink(path);
  rmdir(dir);
}
END_TEST

/* The ABI version a fixture's descriptor declares (its first two fields,
 * which never move), read with dlopen as the loader does. */
static void fixture_abi(const char *path, unsigned *major, unsigned *minor) {
  void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
  ck_assert_msg(h != NULL, "%s", dlerror());
  const uint32_t *d = dlsym(h, NN_PLUGIN_SYMBOL);
  ck_assert_ptr_nonnull(d);
  *major = d[0];
  *minor = d[1];
  dlclose(h);
}

/* bad_major is a plugin built against the ABI 1 headers: refused, with
 * its version, ours and what to do about it. */
START_TEST(test_other_abi_major_is_refused_with_both_versions) {
  unsigned major, minor;
  fixture_abi(fixture("bad_major"), &major, &minor);
  ck_assert_uint_eq(major, 1);
  nn_loaded *p = NULL;
  nn_error err = {0};
  ck_assert_int_eq(nn_plugin_open(&p, fixture("bad_major"), 0, NULL, &err),
                   NN_EABI);
  ck_assert_ptr_null(p);
  char theirs[32], ours[32];
  snprintf(theirs, sizeof theirs, "ABI %u.%u", major, minor);
  /* Ours is this header's version ("... supports ABI 2.0 to 2.0"). */
  snprintf(ours, sizeof ours, "%u.%u", NN_ABI_MAJOR, NN_ABI_MINOR);
  ck_assert_msg(strstr(err.msg, theirs) && strstr(err.msg, ours) &&
                strstr(err.msg, "bad_major.so"), "%s", err.msg);
  ck_assert_msg(strstr(err.msg, "rebuild") &&
                strstr(err.msg, "installed headers"), "%s", err.msg);
}
END_TEST

START_TEST(test_newer_minor_is_refused) {
  unsigned major, minor;
  fixture_abi(fixture("newer_minor"), &major, &minor);
  ck_assert_uint_eq(major, NN_ABI_MAJOR);
  ck_assert_uint_gt(minor, NN_ABI_MINOR);
  nn_loaded *p = NULL;
  nn_error err = {0};
  ck_assert_int_eq(nn_plugin_open(&p, fixture("newer_minor"), 0, NULL, &err),
                   NN_EABI);
  ck_assert_ptr_null(p);
  char theirs[32], ours[32];
  snprintf(theirs, sizeof theirs, "ABI %u.%u", major, minor);
  snprintf(ours, sizeof ours, "%u.%u", NN_ABI_MAJOR, NN_ABI_MINOR);
  ck_assert_msg(strstr(err.msg, theirs) && strstr(err.msg, ours) &&
                strstr(err.msg, "newer_minor.so"), "%s", err.msg);
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
  ck_assert_uint_ge(n, 8);
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
    if (!strcmp(list[i].name, "dense") || !strcmp(list[i].name, "relu") ||
        !strcmp(list[i].name, "sigmoid") || !strcmp(list[i].name, "tanh") ||
        !strcmp(list[i].name, "dropout")) {
      ck_assert_uint_eq(list[i].kind, NN_KIND_LAYER);
      found++;
    }
    if (list[i].kind) ck_assert_str_eq(list[i].version, "0.1.0");
    ck_assert_msg(list[i].kind && !list[i].problem[0], "%s: %s", list[i].name,
                  list[i].problem);
  }
  ck_assert_int_eq(found, 8);
  free(list);
  /* The fixtures directory lists its broken plugins with their problems,
   * and those that load (they misbehave only when used). */
  static const struct {
    const char *name;
    int loads;
  } fixtures[] = {{"bad_decl", 0},      {"bad_major", 0},
                  {"bad_stepper", 1},   {"crash", 1},
                  {"faulty", 1},        {"faulty_layer", 1},
                  {"hidden_state", 1},
                  {"killat", 0},        {"marker", 0},
                  {"newer_minor", 0},
                  {"no_symbol", 0},     {"nospace", 0},
                  {"nostate", 1},
                  {"prints", 1},         {"slot_order", 1},
                  {"unstable_shapes", 1}, {"wrong_grad", 1}};
  const size_t n_fixtures = sizeof fixtures / sizeof fixtures[0];
  char dir[2048];
  snprintf(dir, sizeof dir, "%s", fixture("x"));
  *strrchr(dir, '/') = '\0';
  ck_assert_int_eq(nn_plugin_list(dir, &list, &n, &err), NN_OK);
  ck_assert_uint_eq(n, n_fixtures);
  for (size_t i = 0; i < n; i++) {
    ck_assert_str_eq(list[i].name, fixtures[i].name);
    if (fixtures[i].loads) {
      ck_assert_msg(list[i].kind != 0 && !list[i].problem[0], "%s: %s",
                    list[i].name, list[i].problem);
    } else {
      ck_assert_uint_eq(list[i].kind, 0);
      ck_assert_str_ne(list[i].problem, "");
    }
    if (!strcmp(list[i].name, "bad_stepper"))
      ck_assert_uint_eq(list[i].kind, NN_KIND_MODEL);
  }
  free(list);
}
END_TEST

/* A layer plugin loads as a layer, and only where a layer is wanted. */
START_TEST(test_open_layer) {
  nn_loaded *p = NULL;
  nn_error err = {0};
  ck_assert_msg(nn_plugin_open(&p, "dense", NN_KIND_LAYER, test_plugin_path(),
                               &err) == NN_OK, "%s", err.msg);
  const nn_plugin *d = nn_loaded_desc(p);
  ck_assert_str_eq(d->name, "dense");
  ck_assert_uint_eq(d->kind, NN_KIND_LAYER);
  ck_assert_ptr_nonnull(d->layer);
  ck_assert_ptr_null(d->model);
  ck_assert_ptr_null(d->optim);
  ck_assert_ptr_nonnull(strstr(nn_loaded_path(p), "dense"));
  nn_plugin_close(p);
  p = NULL;
  ck_assert_int_eq(nn_plugin_open(&p, "dense", 0, test_plugin_path(), &err),
                   NN_OK);
  ck_assert_uint_eq(nn_loaded_desc(p)->kind, NN_KIND_LAYER);
  nn_plugin_close(p);
  p = NULL;
  ck_assert_int_eq(nn_plugin_open(&p, "dense", NN_KIND_MODEL,
                                  test_plugin_path(), &err), NN_EPLUGIN);
  ck_assert_ptr_null(p);
  ck_assert_msg(strstr(err.msg, "a layer") && strstr(err.msg, "a model"), "%s",
                err.msg);
  /* A model is not a layer either; a missing layer lists the layers. */
  ck_assert_int_eq(nn_plugin_open(&p, "twolayer", NN_KIND_LAYER,
                                  test_plugin_path(), &err), NN_EPLUGIN);
  ck_assert_int_eq(nn_plugin_open(&p, "denze", NN_KIND_LAYER,
                                  test_plugin_path(), &err), NN_ENOTFOUND);
  ck_assert_msg(strstr(err.msg, "did you mean 'dense'?") &&
                strstr(err.msg, "available: dense, ") &&
                strstr(err.msg, "tanh"), "%s", err.msg);
}
END_TEST

/* ---- extensions: which fast paths each plugin's instance offers */

/* An extension of an instance, checked to carry at least this core's
 * struct size. */
static const void *ext_of(const void *(*extension)(void *, const char *),
                          void *self, const char *id, size_t size) {
  ck_assert_ptr_nonnull(extension);
  const void *e = extension(self, id);
  if (e) ck_assert_uint_ge(*(const uint32_t *)e, size);
  return e;
}

/* A model instance of a loaded model plugin for 784 inputs. */
static void *model_instance(const nn_plugin *d, const nn_value *opts,
                            gsl_rng *rng) {
  void *self = NULL;
  nn_error err = {0};
  ck_assert_msg(d->model->create(opts, (nn_shape){1, 28, 28}, 10, 8, rng,
                                 &self, &err) == NN_OK, "%s", err.msg);
  return self;
}

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
  gsl_rng *rng = gsl_rng_alloc(gsl_rng_mt19937);
  ck_assert_ptr_nonnull(rng);
  const nn_plugin *dtl = nn_loaded_desc(tl), *dsm = nn_loaded_desc(sm),
                  *dsgd = nn_loaded_desc(sgd), *dbad = nn_loaded_desc(bad);
  const nn_value hidden[1] = {{.i = 16}};
  void *mtl = model_instance(dtl, hidden, rng);
  void *msm = model_instance(dsm, NULL, rng);
  const nn_value mode[1] = {{.i = 0}};
  void *mbad = model_instance(dbad, mode, rng);

  /* twolayer: the sparse input (with its transpose) and the fused step
   * with the next batch's forward inside it (the pipeline). */
  const nn_model_sparse *s = ext_of(dtl->model->extension, mtl,
                                    NN_EXT_MODEL_SPARSE, sizeof *s);
  ck_assert_ptr_nonnull(s);
  ck_assert(s->forward && s->backward);
  ck_assert_uint_eq(s->flags & NN_SPARSE_TRANSPOSE, NN_SPARSE_TRANSPOSE);
  const nn_model_fused_step *f = ext_of(dtl->model->extension, mtl,
                                        NN_EXT_MODEL_FUSED_STEP, sizeof *f);
  ck_assert_ptr_nonnull(f);
  ck_assert(f->backward_step && f->backward_step_forward);
  ck_assert_ptr_null(dtl->model->extension(mtl, "nn.no-such-extension/1"));
  ck_assert_ptr_null(dtl->model->extension(mtl, NN_EXT_OPTIM_PARTS));
  /* softmax: the sparse input only (it keeps the separate step). */
  s = ext_of(dsm->model->extension, msm, NN_EXT_MODEL_SPARSE, sizeof *s);
  ck_assert_ptr_nonnull(s);
  ck_assert(s->forward && s->backward);
  ck_assert_ptr_null(dsm->model->extension(msm, NN_EXT_MODEL_FUSED_STEP));
  /* The bad_stepper fixture: the fused step, but no pipeline. */
  ck_assert_ptr_nonnull(ext_of(dbad->model->extension, mbad,
                               NN_EXT_MODEL_SPARSE, sizeof *s));
  f = ext_of(dbad->model->extension, mbad, NN_EXT_MODEL_FUSED_STEP,
             sizeof *f);
  ck_assert_ptr_nonnull(f);
  ck_assert(f->backward_step && !f->backward_step_forward);

  /* sgd steps in parts (rows and blocks) and tells its rule: plain SGD
   * without momentum (L2 on weights only), none with momentum. */
  size_t n;
  nn_param *params = dtl->model->params(mtl, &n);
  ck_assert_uint_eq(n, 4);
  for (int with_momentum = 0; with_momentum < 2; with_momentum++) {
    const nn_value o[4] = {{.r = 0.25}, {.r = 0.001},
                           {.r = with_momentum ? 0.9 : 0.0}};
    void *opt = NULL;
    ck_assert_msg(dsgd->optim->create(o, params, n, &opt, &err) == NN_OK, "%s",
                  err.msg);
    const nn_optim_parts *parts = ext_of(dsgd->optim->extension, opt,
                                         NN_EXT_OPTIM_PARTS, sizeof *parts);
    ck_assert_ptr_nonnull(parts);
    ck_assert(parts->rows && parts->block);
    const nn_optim_sgd_rule *rule = ext_of(
        dsgd->optim->extension, opt, NN_EXT_OPTIM_SGD_RULE, sizeof *rule);
    ck_assert_ptr_nonnull(rule);
    ck_assert_ptr_nonnull(rule->rule);
    ck_assert_ptr_null(dsgd->optim->extension(opt, NN_EXT_MODEL_SPARSE));
    if (parts->begin)
      ck_assert_int_eq(parts->begin(opt, params, n, &err), NN_OK);
    for (size_t k = 0; k < n; k++) {
      double lr = -1, reg = -1;
      const int plain = rule->rule(opt, params, n, k, &lr, &reg);
      ck_assert_int_eq(plain, !with_momentum);
      if (!plain) continue;
      ck_assert(lr == 0.25);
      ck_assert(reg == ((params[k].flags & NN_PARAM_WEIGHT) ? 0.001 : 0.0));
    }
    if (parts->end) ck_assert_int_eq(parts->end(opt, params, n, &err), NN_OK);
    dsgd->optim->destroy(opt);
  }
  dtl->model->destroy(mtl);
  dsm->model->destroy(msm);
  dbad->model->destroy(mbad);
  gsl_rng_free(rng);
  nn_plugin_close(tl);
  nn_plugin_close(sm);
  nn_plugin_close(sgd);
  nn_plugin_close(bad);
}
END_TEST

START_TEST(test_kind_names) {
  ck_assert_str_eq(nn_kind_name(NN_KIND_MODEL), "model");
  ck_assert_str_eq(nn_kind_name(NN_KIND_OPTIMIZER), "optimizer");
  ck_assert_str_eq(nn_kind_name(NN_KIND_LAYER), "layer");
  ck_assert_str_eq(nn_kind_name(0), "?");
  ck_assert_str_eq(nn_kind_name(99), "?");
  char buf[4096];
  ck_assert_ptr_nonnull(strstr(nn_plugin_default_path(buf, sizeof buf),
                               nn_plugin_dir()));
}
END_TEST

/* ---- parameter names */

static nn_param param(const char *name, size_t r, size_t c, size_t gr,
                      size_t gc) {
  return (nn_param){name, gsl_matrix_calloc(r, c),
                    gr ? gsl_matrix_calloc(gr, gc) : NULL, NN_PARAM_WEIGHT};
}

static void params_free(nn_param *p, size_t n) {
  for (size_t i = 0; i < n; i++) {
    gsl_matrix_free(p[i].value);
    if (p[i].grad) gsl_matrix_free(p[i].grad);
  }
}

START_TEST(test_param_names) {
  nn_error err = {0};
  nn_param p[3] = {param("W", 3, 2, 3, 2), param("b", 1, 2, 1, 2),
                   param("W", 2, 2, 2, 2)};
  nn_param st[2] = {param("m", 3, 2, 0, 0), param("b", 1, 2, 0, 0)};
  /* Unique names, grads of their parameters' shapes: fine. */
  ck_assert_int_eq(nn_check_param_names("owner", p, 2, st, 1, &err), NN_OK);
  ck_assert_int_eq(nn_check_param_names("owner", p, 2, NULL, 0, &err), NN_OK);
  ck_assert_int_eq(nn_check_param_names("owner", NULL, 0, NULL, 0, &err),
                   NN_OK);
  /* Two parameters of the same name. */
  ck_assert_int_eq(nn_check_param_names("twolayer", p, 3, NULL, 0, &err),
                   NN_EPLUGIN);
  ck_assert_msg(strstr(err.msg, "twolayer: two parameters named 'W'") != NULL,
                "%s", err.msg);
  /* A state buffer named like a parameter. */
  ck_assert_int_eq(nn_check_param_names("layer fc1 (dense)", p, 2, st, 2,
                                        &err), NN_EPLUGIN);
  ck_assert_msg(strstr(err.msg, "layer fc1 (dense): two") &&
                strstr(err.msg, "state") && strstr(err.msg, "'b'"), "%s",
                err.msg);
  /* Two state buffers of the same name. */
  nn_param st2[2] = {st[0], st[0]};
  ck_assert_int_eq(nn_check_param_names("sgd", NULL, 0, st2, 2, &err),
                   NN_EPLUGIN);
  ck_assert_msg(strstr(err.msg, "sgd: two") && strstr(err.msg, "'m'"), "%s",
                err.msg);
  /* A gradient of another shape than its parameter, or none. */
  nn_param q[3] = {param("W", 3, 2, 3, 2), param("b", 1, 2, 2, 1),
                   param("c", 1, 2, 0, 0)};
  ck_assert_int_eq(nn_check_param_names("m", q, 2, NULL, 0, &err), NN_EPLUGIN);
  ck_assert_msg(strstr(err.msg, "m: parameter 'b' has no gradient of its "
                                "shape") != NULL, "%s", err.msg);
  nn_param q2[2] = {q[0], q[2]};
  ck_assert_int_eq(nn_check_param_names("m", q2, 2, NULL, 0, &err),
                   NN_EPLUGIN);
  ck_assert_msg(strstr(err.msg, "'c'") != NULL, "%s", err.msg);
  /* (State buffers have no gradient: that is fine.) */
  ck_assert_int_eq(nn_check_param_names("m", q, 1, &q[2], 1, &err), NN_OK);
  /* No name, an empty name, no value. */
  nn_param r = q[0];
  r.name = "";
  ck_assert_int_eq(nn_check_param_names("m", &r, 1, NULL, 0, &err),
                   NN_EPLUGIN);
  r.name = NULL;
  ck_assert_int_eq(nn_check_param_names("m", &r, 1, NULL, 0, &err),
                   NN_EPLUGIN);
  r = q[0];
  r.value = NULL;
  ck_assert_int_eq(nn_check_param_names("m", &r, 1, NULL, 0, &err),
                   NN_EPLUGIN);
  params_free(p, 3);
  params_free(st, 2);
  params_free(q, 3);
}
END_TEST

/* ---- what the loader checks in a descriptor
 *
 * The checks run only inside nn_plugin_open, on a file.  To give them
 * descriptors made here, the test loads a valid fixture (bad_stepper.so)
 * itself, points its descriptor at an option table or ops table of the
 * test's own (the descriptor sits in the fixture's relocated read-only
 * data: mprotect makes its page writable in this test's process), and
 * opens the same file: dlopen hands the loader the same, patched, copy.
 * Everything is put back before the file is closed.  Check forks for
 * each test, so nothing outlives the test either way. */
static int open_patched(const nn_option *options, const nn_model_ops *ops,
                        nn_error *err) {
  const char *path = fixture("bad_stepper");
  void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
  ck_assert_msg(h != NULL, "%s", dlerror());
  nn_plugin *d = dlsym(h, NN_PLUGIN_SYMBOL);
  ck_assert_ptr_nonnull(d);
  const uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
  const uintptr_t start = (uintptr_t)d & ~(page - 1);
  const size_t len = (uintptr_t)d + sizeof *d - start;
  ck_assert_int_eq(mprotect((void *)start, len, PROT_READ | PROT_WRITE), 0);
  const nn_plugin saved = *d;
  if (options) d->options = options;
  if (ops) d->model = ops;
  nn_loaded *p = NULL;
  memset(err, 0, sizeof *err);
  const int rc = nn_plugin_open(&p, path, 0, NULL, err);
  if (!rc) ck_assert_ptr_eq(nn_loaded_desc(p), d);
  else ck_assert_ptr_null(p);
  nn_plugin_close(p);
  *d = saved;
  dlclose(h);
  return rc;
}

#define OPT_END {NULL, 0, NULL, NULL, 0, 0, 0}

START_TEST(test_option_table_checks) {
  nn_error err;
  /* A valid table (a required key, bounds, every type) loads: the patching
   * itself breaks nothing. */
  static const nn_option good[] = {
      {"units", NN_OPT_INT, NULL, "required", NN_OPT_HAS_MIN, 1, 0},
      {"p", NN_OPT_REAL, "0.5", "", NN_OPT_HAS_MIN | NN_OPT_HAS_MAX |
       NN_OPT_MAX_EXCLUSIVE, 0, 1},
      {"bias", NN_OPT_BOOL, "true", "", 0, 0, 0},
      {"init", NN_OPT_STRING, "normal", "", 0, 0, 0},
      OPT_END};
  ck_assert_msg(open_patched(good, NULL, &err) == NN_OK, "%s", err.msg);
  /* A key declared twice. */
  static const nn_option dup[] = {{"units", NN_OPT_INT, "1", "", 0, 0, 0},
                                  {"bias", NN_OPT_BOOL, "true", "", 0, 0, 0},
                                  {"units", NN_OPT_INT, "2", "", 0, 0, 0},
                                  OPT_END};
  ck_assert_int_eq(open_patched(dup, NULL, &err), NN_EPLUGIN);
  ck_assert_msg(strstr(err.msg, "bad_stepper.so") &&
                strstr(err.msg, "'units' twice"), "%s", err.msg);
  /* The reserved key `type` (the core reads it: which plugin), and
   * init_from. */
  static const nn_option type[] = {{"units", NN_OPT_INT, "1", "", 0, 0, 0},
                                   {"type", NN_OPT_STRING, "x", "", 0, 0, 0},
                                   OPT_END};
  ck_assert_int_eq(open_patched(type, NULL, &err), NN_EPLUGIN);
  ck_assert_msg(strstr(err.msg, "'type'") && strstr(err.msg, "reserved"), "%s",
                err.msg);
  static const nn_option init_from[] = {
      {"init_from", NN_OPT_STRING, NULL, "", 0, 0, 0}, OPT_END};
  ck_assert_int_eq(open_patched(init_from, NULL, &err), NN_EPLUGIN);
  ck_assert_msg(strstr(err.msg, "'init_from'") && strstr(err.msg, "reserved"),
                "%s", err.msg);
  /* Defaults that do not parse as their type. */
  static const nn_option bad_int[] = {
      {"units", NN_OPT_INT, "ten", "", 0, 0, 0}, OPT_END};
  ck_assert_int_eq(open_patched(bad_int, NULL, &err), NN_EPLUGIN);
  ck_assert_msg(strstr(err.msg, "default of option 'units'") &&
                strstr(err.msg, "ten"), "%s", err.msg);
  static const nn_option bad_bool[] = {
      {"bias", NN_OPT_BOOL, "maybe", "", 0, 0, 0}, OPT_END};
  ck_assert_int_eq(open_patched(bad_bool, NULL, &err), NN_EPLUGIN);
  ck_assert_msg(strstr(err.msg, "default of option 'bias'"), "%s", err.msg);
  static const nn_option bad_real[] = {
      {"p", NN_OPT_REAL, "0.5x", "", 0, 0, 0}, OPT_END};
  ck_assert_int_eq(open_patched(bad_real, NULL, &err), NN_EPLUGIN);
  ck_assert_msg(strstr(err.msg, "default of option 'p'"), "%s", err.msg);
  /* Defaults out of their bounds (inclusive and exclusive). */
  static const nn_option high[] = {
      {"p", NN_OPT_REAL, "1.5", "", NN_OPT_HAS_MIN | NN_OPT_HAS_MAX, 0, 1},
      OPT_END};
  ck_assert_int_eq(open_patched(high, NULL, &err), NN_EPLUGIN);
  ck_assert_msg(strstr(err.msg, "default of option 'p'") &&
                strstr(err.msg, "1.5"), "%s", err.msg);
  static const nn_option at_max[] = {
      {"p", NN_OPT_REAL, "1", "", NN_OPT_HAS_MAX | NN_OPT_MAX_EXCLUSIVE, 0, 1},
      OPT_END};
  ck_assert_int_eq(open_patched(at_max, NULL, &err), NN_EPLUGIN);
  ck_assert_msg(strstr(err.msg, "default of option 'p'"), "%s", err.msg);
  static const nn_option low[] = {
      {"units", NN_OPT_INT, "0", "", NN_OPT_HAS_MIN, 1, 0}, OPT_END};
  ck_assert_int_eq(open_patched(low, NULL, &err), NN_EPLUGIN);
  ck_assert_msg(strstr(err.msg, "default of option 'units'"), "%s", err.msg);
  /* An unknown type, an empty key. */
  static const nn_option bad_type[] = {{"x", 9, "1", "", 0, 0, 0}, OPT_END};
  ck_assert_int_eq(open_patched(bad_type, NULL, &err), NN_EPLUGIN);
  ck_assert_msg(strstr(err.msg, "'x'") && strstr(err.msg, "unknown type"),
                "%s", err.msg);
  static const nn_option empty[] = {{"", NN_OPT_INT, "1", "", 0, 0, 0},
                                    OPT_END};
  ck_assert_int_eq(open_patched(empty, NULL, &err), NN_EPLUGIN);
  ck_assert_msg(strstr(err.msg, "empty key"), "%s", err.msg);
}
END_TEST

/* The fixture written for it: a plugin whose table declares a key twice. */
START_TEST(test_duplicate_option_fixture) {
  nn_loaded *p = NULL;
  nn_error err = {0};
  ck_assert_int_eq(nn_plugin_open(&p, fixture("bad_decl"), 0, NULL, &err),
                   NN_EPLUGIN);
  ck_assert_ptr_null(p);
  ck_assert_msg(strstr(err.msg, "bad_decl.so") &&
                strstr(err.msg, "plugin 'bad_decl'") &&
                strstr(err.msg, "'scale' twice"), "%s", err.msg);
}
END_TEST

/* An ops table too small for ABI 2.0 (or without its size) is refused
 * before anything beyond its end is read; so is one lacking an operation
 * every model needs. */
START_TEST(test_ops_table_checks) {
  nn_loaded *bad = NULL;
  nn_error err = {0};
  ck_assert_int_eq(nn_plugin_open(&bad, fixture("bad_stepper"), NN_KIND_MODEL,
                                  NULL, &err), NN_OK);
  nn_model_ops ops = *nn_loaded_desc(bad)->model;
  nn_plugin_close(bad);
  ck_assert_msg(open_patched(NULL, &ops, &err) == NN_OK, "%s", err.msg);
  ops.size = (uint32_t)offsetof(nn_model_ops, state);
  ck_assert_int_eq(open_patched(NULL, &ops, &err), NN_EPLUGIN);
  char want[128];
  snprintf(want, sizeof want, "is %u bytes, ABI 2.0's is %u",
           (unsigned)offsetof(nn_model_ops, state),
           (unsigned)offsetof(nn_model_ops, memory));
  ck_assert_msg(strstr(err.msg, want) && strstr(err.msg, "bad_stepper"), "%s",
                err.msg);
  /* An ABI 2.0 table (before `memory`) still loads. */
  ops.size = (uint32_t)offsetof(nn_model_ops, memory);
  ck_assert_msg(open_patched(NULL, &ops, &err) == NN_OK, "%s", err.msg);
  ops.size = 0;
  ck_assert_int_eq(open_patched(NULL, &ops, &err), NN_EPLUGIN);
  ck_assert_msg(strstr(err.msg, "no size") != NULL, "%s", err.msg);
  ops.size = sizeof ops;
  ops.backward = NULL;
  ck_assert_int_eq(open_patched(NULL, &ops, &err), NN_EPLUGIN);
  ck_assert_msg(strstr(err.msg, "lacks required operations") != NULL, "%s",
                err.msg);
}
END_TEST

/* ---- memory answers (ABI 2.1): what create would allocate */

/* Bytes of the parameter values of an instance, as allocated (rows of
 * tda doubles). */
static uint64_t value_bytes(const nn_param *p, size_t n) {
  uint64_t bytes = 0;
  for (size_t i = 0; i < n; i++)
    bytes += p[i].value->size1 * p[i].value->tda * sizeof(double);
  return bytes;
}

START_TEST(test_memory_answers) {
  nn_error err = {0};
  nn_loaded *tl = NULL, *sm = NULL, *dn = NULL, *sgd = NULL;
  ck_assert_int_eq(nn_plugin_open(&tl, "twolayer", NN_KIND_MODEL,
                                  test_plugin_path(), &err), NN_OK);
  ck_assert_int_eq(nn_plugin_open(&sm, "softmax", NN_KIND_MODEL,
                                  test_plugin_path(), &err), NN_OK);
  ck_assert_int_eq(nn_plugin_open(&dn, "dense", NN_KIND_LAYER,
                                  test_plugin_path(), &err), NN_OK);
  ck_assert_int_eq(nn_plugin_open(&sgd, "sgd", NN_KIND_OPTIMIZER,
                                  test_plugin_path(), &err), NN_OK);
  nn_memory_fn tl_mem = nn_plugin_memory_op(nn_loaded_desc(tl));
  nn_memory_fn sm_mem = nn_plugin_memory_op(nn_loaded_desc(sm));
  nn_memory_fn dn_mem = nn_plugin_memory_op(nn_loaded_desc(dn));
  ck_assert_ptr_nonnull(tl_mem);
  ck_assert_ptr_nonnull(sm_mem);
  ck_assert_ptr_nonnull(dn_mem);
  ck_assert_ptr_null(nn_plugin_memory_op(nn_loaded_desc(sgd)));
  /* A table built before ABI 2.1 is not read past its size. */
  nn_model_ops old = *nn_loaded_desc(tl)->model;
  old.size = (uint32_t)offsetof(nn_model_ops, memory);
  const nn_plugin old_desc = {.kind = NN_KIND_MODEL, .model = &old};
  ck_assert_ptr_null(nn_plugin_memory_op(&old_desc));

  gsl_rng *rng = gsl_rng_alloc(gsl_rng_mt19937);
  ck_assert_ptr_nonnull(rng);
  const nn_shape mnist = {1, 28, 28};
  /* The weights they announce are those they make: 16 hidden units, and
   * 1024 (W1 outgrows L2: its rows are padded). */
  for (int64_t h = 16; h <= 1024; h *= 64) {
    const nn_value hidden[1] = {{.i = h}};
    nn_memory need;
    ck_assert_int_eq(tl_mem(hidden, mnist, 10, 8, &need), NN_OK);
    void *m = model_instance(nn_loaded_desc(tl), hidden, rng);
    size_t n;
    nn_param *p = nn_loaded_desc(tl)->model->params(m, &n);
    ck_assert_uint_eq(need.weights, value_bytes(p, n));
    ck_assert_uint_ge(need.bytes, 2 * need.weights); /* and the gradients */
    nn_loaded_desc(tl)->model->destroy(m);
  }
  nn_memory need;
  ck_assert_int_eq(sm_mem(NULL, mnist, 10, 8, &need), NN_OK);
  ck_assert_uint_eq(need.weights, 784 * 10 * sizeof(double));
  const nn_value dense_opts[4] = {{.i = 32}, {.b = 1}, {.s = "normal"},
                                  {.r = 0.001}};
  ck_assert_int_eq(dn_mem(dense_opts, mnist, 0, 8, &need), NN_OK);
  ck_assert_uint_eq(need.weights, (784 * 32 + 32) * sizeof(double));
  ck_assert_uint_eq(need.out.c * need.out.h, 1);
  ck_assert_uint_eq(need.out.w, 32);
  /* Options create refuses get no answer; shapes beyond 64 bits saturate. */
  const nn_value none[1] = {{.i = 0}}, huge[1] = {{.i = 1000000}};
  ck_assert_int_ne(tl_mem(none, mnist, 10, 8, &need), NN_OK);
  ck_assert_int_eq(tl_mem(huge, (nn_shape){1, 1, UINT32_MAX}, 10, SIZE_MAX,
                          &need), NN_OK);
  ck_assert(need.bytes == UINT64_MAX);
  /* A million hidden units: over 12 GB of weights and gradients. */
  ck_assert_int_eq(tl_mem(huge, mnist, 10, 64, &need), NN_OK);
  ck_assert_uint_gt(need.bytes, (uint64_t)2 * 784 * 1000000 * 8);
  gsl_rng_free(rng);
  nn_plugin_close(tl);
  nn_plugin_close(sm);
  nn_plugin_close(dn);
  nn_plugin_close(sgd);
}
END_TEST

int main(void) {
  gsl_set_error_handler_off();
  Suite *s = suite_create("registry");
  TCase *tc = tcase_create("registry");
  tcase_add_test(tc, test_open_models_and_optimizer_by_name);
  tcase_add_test(tc, test_open_layer);
  tcase_add_test(tc, test_wrong_kind_is_refused);
  tcase_add_test(tc, test_unknown_name_lists_available);
  tcase_add_test(tc, test_unknown_name_loads_nothing);
  tcase_add_test(tc, test_writable_plugins_are_refused);
  tcase_add_test(tc, test_memory_answers);
  tcase_add_test(tc, test_other_abi_major_is_refused_with_both_versions);
  tcase_add_test(tc, test_newer_minor_is_refused);
  tcase_add_test(tc, test_missing_symbol_is_not_a_plugin);
  tcase_add_test(tc, test_loader_reason_is_shown);
  tcase_add_test(tc, test_missing_explicit_path);
  tcase_add_test(tc, test_search_path_order_first_wins);
  tcase_add_test(tc, test_list_plugins);
  tcase_add_test(tc, test_kind_names);
  tcase_add_test(tc, test_optional_paths);
  tcase_add_test(tc, test_param_names);
  tcase_add_test(tc, test_option_table_checks);
  tcase_add_test(tc, test_duplicate_option_fixture);
  tcase_add_test(tc, test_ops_table_checks);
  suite_add_tcase(s, tc);
  return test_run_suite(s);
}
