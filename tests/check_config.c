/* SPDX-License-Identifier: GPL-3.0-or-later */
/* Configuration: parsing with provenance, --set overrides, and strict
 * validation against option tables. */
#include <config.h>

#include <string.h>
#include <unistd.h>

#include <gsl/gsl_errno.h>

#include <nn/config.h>

#include "testutil.h"

/* Write text to <test_tmpdir>/<name> and return the path (static buffer). */
static const char *write_ini(const char *name, const char *text) {
  static char path[512];
  snprintf(path, sizeof path, "%s/%s", test_tmpdir, name);
  FILE *f = fopen(path, "w");
  ck_assert_ptr_nonnull(f);
  fputs(text, f);
  fclose(f);
  return path;
}

static const nn_option opts[] = {
    {"learning_rate", NN_OPT_REAL, "0.1", "step size",
     NN_OPT_HAS_MIN | NN_OPT_MIN_EXCLUSIVE, 0, 0},
    {"epochs", NN_OPT_INT, "10", "passes", NN_OPT_HAS_MIN | NN_OPT_HAS_MAX, 1,
     1000},
    {"shuffle", NN_OPT_BOOL, "true", "reshuffle", 0, 0, 0},
    {"name", NN_OPT_STRING, NULL, "required string", 0, 0, 0},
    {NULL, 0, NULL, NULL, 0, 0, 0}};
static const char *const extra[] = {"type", NULL};

static void setup(void) { test_tmpdir_make("config"); }

static void teardown(void) { test_tmpdir_remove(); }

START_TEST(test_shipped_configs_parse) {
  const char *names[] = {"mlp.ini", "softmax.ini", "exp.ini"};
  const char *srcdir = getenv("NN_SRCDIR") ? getenv("NN_SRCDIR") : ".";
  for (size_t i = 0; i < 3; i++) {
    char path[1024];
    snprintf(path, sizeof path, "%s/configs/%s", srcdir, names[i]);
    nn_config *cfg = NULL;
    nn_error err = {0};
    ck_assert_msg(nn_config_load(&cfg, path, &err) == NN_OK, "%s", err.msg);
    ck_assert_str_eq(nn_config_get(cfg, "train", "batch_size", NULL), "64");
    ck_assert_str_eq(nn_config_get(cfg, "train", "seed", NULL), "1024");
    ck_assert_str_eq(nn_config_get(cfg, "optimizer", "learning_rate", NULL), "0.1");
    ck_assert_str_eq(nn_config_get(cfg, "optimizer", "reg", NULL), "0.001");
    ck_assert_str_eq(nn_config_get(cfg, "data", "format", NULL), "idx");
    nn_config_free(cfg);
  }
}
END_TEST

START_TEST(test_values_defaults_and_provenance) {
  const char *p = write_ini("a.ini", "; comment\n[opt]\ntype = sgd\n"
                                     "learning_rate = 0.25\nname = x\n");
  nn_config *cfg = NULL;
  nn_error err = {0};
  ck_assert_int_eq(nn_config_load(&cfg, p, &err), NN_OK);
  ck_assert_str_eq(nn_config_name(cfg), "a");
  const char *where = NULL;
  ck_assert_str_eq(nn_config_get(cfg, "opt", "learning_rate", &where), "0.25");
  ck_assert_ptr_nonnull(strstr(where, "a.ini:4"));
  nn_value v[4];
  ck_assert_int_eq(nn_config_resolve(cfg, "opt", "sgd", opts, extra, v, &err),
                   NN_OK);
  ck_assert(v[0].r == 0.25);
  ck_assert_int_eq(v[1].i, 10); /* default */
  ck_assert_int_eq(v[2].b, 1);
  ck_assert_str_eq(v[3].s, "x");
  nn_config_free(cfg);
}
END_TEST

/* Load `text`, resolve [opt]; return the code and leave the message. */
static int resolve_text(const char *text, nn_error *err) {
  nn_config *cfg = NULL;
  int rc = nn_config_load(&cfg, write_ini("t.ini", text), err);
  if (rc) return rc;
  nn_value v[4];
  rc = nn_config_resolve(cfg, "opt", "sgd", opts, extra, v, err);
  nn_config_free(cfg);
  return rc;
}

START_TEST(test_unknown_key_names_file_line_and_accepted_keys) {
  nn_error err = {0};
  ck_assert_int_eq(resolve_text("[opt]\nname = a\n\nlearing_rate = 1\n", &err),
                   NN_ECONFIG);
  ck_assert_msg(strstr(err.msg, "t.ini:4:") != NULL, "%s", err.msg);
  ck_assert_msg(strstr(err.msg, "learing_rate") != NULL, "%s", err.msg);
  ck_assert_msg(strstr(err.msg, "[opt]") != NULL, "%s", err.msg);
  ck_assert_msg(strstr(err.msg, "type, learning_rate, epochs, shuffle, name"),
                "%s", err.msg);
}
END_TEST

START_TEST(test_wrong_types) {
  nn_error err = {0};
  ck_assert_int_eq(resolve_text("[opt]\nname = a\nlearning_rate = fast\n", &err),
                   NN_ECONFIG);
  ck_assert_msg(strstr(err.msg, "t.ini:3:") && strstr(err.msg, "expected a number"),
                "%s", err.msg);
  ck_assert_int_eq(resolve_text("[opt]\nname = a\nepochs = 2.5\n", &err),
                   NN_ECONFIG);
  ck_assert_msg(strstr(err.msg, "t.ini:3:") && strstr(err.msg, "integer"), "%s",
                err.msg);
  ck_assert_int_eq(resolve_text("[opt]\nname = a\nepochs = 99999999999999999999\n",
                                &err), NN_ECONFIG);
  ck_assert_int_eq(resolve_text("[opt]\nname = a\nshuffle = maybe\n", &err),
                   NN_ECONFIG);
  ck_assert_msg(strstr(err.msg, "true or false") != NULL, "%s", err.msg);
  ck_assert_int_eq(resolve_text("[opt]\nname = a\nlearning_rate = nan\n", &err),
                   NN_ECONFIG);
}
END_TEST

START_TEST(test_out_of_range) {
  nn_error err = {0};
  ck_assert_int_eq(resolve_text("[opt]\nname = a\nlearning_rate = 0\n", &err),
                   NN_ECONFIG);
  ck_assert_msg(strstr(err.msg, "t.ini:3:") && strstr(err.msg, "> 0"), "%s",
                err.msg);
  ck_assert_int_eq(resolve_text("[opt]\nname = a\nepochs = 1001\n", &err),
                   NN_ECONFIG);
  ck_assert_msg(strstr(err.msg, "<= 1000") != NULL, "%s", err.msg);
  ck_assert_int_eq(resolve_text("[opt]\nname = a\nepochs = 0\n", &err),
                   NN_ECONFIG);
}
END_TEST

START_TEST(test_missing_required_key) {
  nn_error err = {0};
  ck_assert_int_eq(resolve_text("[opt]\nepochs = 3\n", &err), NN_ECONFIG);
  ck_assert_msg(strstr(err.msg, "'name'") != NULL, "%s", err.msg);
}
END_TEST

START_TEST(test_syntax_errors_have_lines) {
  nn_error err = {0};
  ck_assert_int_eq(resolve_text("[opt]\nname = a\njust words\n", &err),
                   NN_ECONFIG);
  ck_assert_msg(strstr(err.msg, "t.ini:3:") != NULL, "%s", err.msg);
  ck_assert_int_eq(resolve_text("[opt\nname = a\n", &err), NN_ECONFIG);
  ck_assert_msg(strstr(err.msg, "t.ini:1:") != NULL, "%s", err.msg);
  ck_assert_int_eq(resolve_text("name = a\n[opt]\n", &err), NN_ECONFIG);
  ck_assert_msg(strstr(err.msg, "t.ini:1:") && strstr(err.msg, "outside"), "%s",
                err.msg);
  ck_assert_int_eq(resolve_text("[opt]\nname = a\nname = b\n", &err), NN_ECONFIG);
  ck_assert_msg(strstr(err.msg, "t.ini:3:") && strstr(err.msg, "twice"), "%s",
                err.msg);
}
END_TEST

START_TEST(test_overlong_line_is_an_error_not_a_truncation) {
  char text[1024];
  char longval[400];
  memset(longval, 'x', sizeof longval - 1);
  longval[sizeof longval - 1] = '\0';
  snprintf(text, sizeof text, "[opt]\nname = %s\nepochs = 3\n", longval);
  nn_error err = {0};
  ck_assert_int_eq(resolve_text(text, &err), NN_ECONFIG);
  ck_assert_msg(strstr(err.msg, "t.ini:2:") && strstr(err.msg, "too long"), "%s",
                err.msg);
}
END_TEST

START_TEST(test_missing_file_says_what_was_tried) {
  nn_config *cfg = NULL;
  nn_error err = {0};
  ck_assert_int_eq(nn_config_load(&cfg, "no/such/config.ini", &err), NN_ECONFIG);
  ck_assert_ptr_null(cfg);
  ck_assert_msg(strstr(err.msg, "no/such/config.ini") && strstr(err.msg, "tried /"),
                "%s", err.msg);
}
END_TEST

START_TEST(test_set_overrides) {
  nn_config *cfg = NULL;
  nn_error err = {0};
  ck_assert_int_eq(nn_config_load(&cfg, write_ini("s.ini", "[opt]\nname = a\n"),
                                  &err), NN_OK);
  ck_assert_int_eq(nn_config_set(cfg, "opt.name = b", &err), NN_OK);
  ck_assert_int_eq(nn_config_set(cfg, "opt.epochs=7", &err), NN_OK);
  const char *where;
  ck_assert_str_eq(nn_config_get(cfg, "opt", "name", &where), "b");
  ck_assert_str_eq(where, "--set");
  nn_value v[4];
  ck_assert_int_eq(nn_config_resolve(cfg, "opt", "sgd", opts, extra, v, &err),
                   NN_OK);
  ck_assert_int_eq(v[1].i, 7);
  /* Overrides are validated like the file. */
  ck_assert_int_eq(nn_config_set(cfg, "opt.epochs=lots", &err), NN_OK);
  ck_assert_int_eq(nn_config_resolve(cfg, "opt", "sgd", opts, extra, v, &err),
                   NN_ECONFIG);
  ck_assert_msg(strstr(err.msg, "--set") != NULL, "%s", err.msg);
  ck_assert_int_eq(nn_config_set(cfg, "epochs=3", &err), NN_ECONFIG);
  ck_assert_int_eq(nn_config_set(cfg, "opt.epochs", &err), NN_ECONFIG);
  ck_assert_int_eq(nn_config_set(cfg, ".x=1", &err), NN_ECONFIG);
  /* Too long is refused, never cut short. */
  char big[2100] = "opt.name=";
  memset(big + 9, 'x', 2000);
  big[2009] = '\0';
  ck_assert_int_eq(nn_config_set(cfg, big, &err), NN_ECONFIG);
  ck_assert_msg(strstr(err.msg, "too long") != NULL, "%s", err.msg);
  ck_assert_str_eq(nn_config_get(cfg, "opt", "name", NULL), "b");
  nn_config_free(cfg);
}
END_TEST

/* Indentation means nothing: an indented key is a key of its own, not the
 * continuation of the line above (inih's reading). */
START_TEST(test_indented_keys) {
  nn_config *cfg = NULL;
  nn_error err = {0};
  ck_assert_msg(nn_config_load(&cfg, write_ini("i.ini", "[opt]\nname = a\n"
                                                       "   epochs = 5\n"
                                                       "\t[x]\n  k = 1\n"),
                               &err) == NN_OK, "%s", err.msg);
  const char *where;
  ck_assert_str_eq(nn_config_get(cfg, "opt", "name", NULL), "a");
  ck_assert_str_eq(nn_config_get(cfg, "opt", "epochs", &where), "5");
  ck_assert_msg(strstr(where, "i.ini:3") != NULL, "%s", where);
  ck_assert_str_eq(nn_config_get(cfg, "x", "k", NULL), "1");
  nn_config_free(cfg);
}
END_TEST

START_TEST(test_unknown_section) {
  nn_config *cfg = NULL;
  nn_error err = {0};
  ck_assert_int_eq(nn_config_load(&cfg, write_ini("u.ini",
                                  "[opt]\nname = a\n[optimiser]\nx = 1\n"), &err),
                   NN_OK);
  const char *const names[] = {"opt", NULL};
  ck_assert_int_eq(nn_config_check_sections(cfg, names, &err), NN_ECONFIG);
  /* The line of the section header, where the name is. */
  ck_assert_msg(strstr(err.msg, "u.ini:3:") && strstr(err.msg, "[optimiser]"),
                "%s", err.msg);
  nn_config_free(cfg);
}
END_TEST

START_TEST(test_option_count) {
  ck_assert_uint_eq(nn_option_count(opts), 4);
  ck_assert_uint_eq(nn_option_count(NULL), 0);
}
END_TEST

int main(void) {
  gsl_set_error_handler_off();
  Suite *s = suite_create("config");
  TCase *tc = tcase_create("config");
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_add_test(tc, test_shipped_configs_parse);
  tcase_add_test(tc, test_values_defaults_and_provenance);
  tcase_add_test(tc, test_unknown_key_names_file_line_and_accepted_keys);
  tcase_add_test(tc, test_wrong_types);
  tcase_add_test(tc, test_out_of_range);
  tcase_add_test(tc, test_missing_required_key);
  tcase_add_test(tc, test_syntax_errors_have_lines);
  tcase_add_test(tc, test_overlong_line_is_an_error_not_a_truncation);
  tcase_add_test(tc, test_missing_file_says_what_was_tried);
  tcase_add_test(tc, test_set_overrides);
  tcase_add_test(tc, test_indented_keys);
  tcase_add_test(tc, test_unknown_section);
  tcase_add_test(tc, test_option_count);
  suite_add_tcase(s, tc);
  return test_run_suite(s);
}
