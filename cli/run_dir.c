/* SPDX-License-Identifier: GPL-3.0-or-later */
/* Output directories of runs: see run_dir.h. */
#define _DEFAULT_SOURCE /* flock, realpath, mkstemp */
#include <config.h>

#include "run_dir.h"

#include "files/atomic_file.h"
#include "sweep_proc.h"

#include <dirent.h>
#include <limits.h>
#include <stdlib.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

/* mkdir -p: create every missing component of path. */
static int make_dirs(const char *path, char *msg, size_t msg_size) {
  char buf[4096];
  if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf) {
    snprintf(msg, msg_size, "output directory path too long: %s", path);
    return -1;
  }
  for (char *p = buf + 1;; p++) {
    int end = *p == '\0';
    if (*p == '/' || end) {
      *p = '\0';
      if (mkdir(buf, 0777) != 0 && errno != EEXIST) {
        snprintf(msg, msg_size, "cannot create directory %s: %s", buf,
                 strerror(errno));
        return -1;
      }
      if (end) break;
      *p = '/';
    }
  }
  struct stat st;
  if (stat(path, &st) != 0 || !S_ISDIR(st.st_mode)) {
    snprintf(msg, msg_size, "%s exists and is not a directory", path);
    return -1;
  }
  return 0;
}

int run_dir_create(const char *explicit, const char *name, char *out,
                   size_t out_size, char *msg, size_t msg_size) {
  if (explicit) {
    if (make_dirs(explicit, msg, msg_size)) return -1;
    snprintf(out, out_size, "%s", explicit);
    return 0;
  }
  if (make_dirs("runs", msg, msg_size)) return -1;
  /* mkdir is atomic: two runs started together never share a directory. */
  for (unsigned n = 1; n < 1000000; n++) {
    snprintf(out, out_size, "runs/%s-%u", name, n);
    if (mkdir(out, 0777) == 0) return 0;
    if (errno != EEXIST) {
      snprintf(msg, msg_size, "cannot create directory %s: %s", out,
               strerror(errno));
      return -1;
    }
  }
  snprintf(msg, msg_size, "no free run directory under runs/ for %s", name);
  return -1;
}

/* Whether process pid is gone.  EPERM means it runs under another user:
 * alive, and not ours to judge. */
static int process_gone(long pid) {
  return kill((pid_t)pid, 0) != 0 && errno == ESRCH;
}

/* Remove the temporary files that writers killed before their rename left
 * in dir (atomic_file.h); a live writer's file is its own business. */
static int remove_debris(const char *dir, char *msg, size_t msg_size) {
  DIR *d = opendir(dir);
  if (!d) {
    snprintf(msg, msg_size, "cannot read directory %s: %s", dir,
             strerror(errno));
    return -1;
  }
  int rc = 0;
  struct dirent *e;
  while (rc == 0 && (e = readdir(d)) != NULL) {
    long pid = nn__atomic_temp_writer(e->d_name);
    if (pid <= 0 || pid == (long)getpid() || !process_gone(pid)) continue;
    char path[4400];
    struct stat sb;
    snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
    if (lstat(path, &sb) != 0 || !S_ISREG(sb.st_mode)) continue;
    if (unlink(path) != 0 && errno != ENOENT) {
      snprintf(msg, msg_size, "cannot remove the stale temporary file %s: %s",
               path, strerror(errno));
      rc = -1;
    }
  }
  closedir(d);
  return rc;
}

int run_dir_claim(const char *dir, char *msg, size_t msg_size) {
  char path[4200];
  snprintf(path, sizeof path, "%s/%s", dir, RUN_DIR_LOCK);
  int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0666);
  if (fd < 0) {
    snprintf(msg, msg_size, "cannot create %s: %s", path, strerror(errno));
    return -1;
  }
  if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
    if (errno == EWOULDBLOCK) {
      char holder[32] = "";
      ssize_t got = pread(fd, holder, sizeof holder - 1, 0);
      holder[got > 0 ? got : 0] = '\0';
      holder[strcspn(holder, "\n")] = '\0';
      snprintf(msg, msg_size,
               "%s is in use by another nnrun (process %s, holding %s)", dir,
               holder[0] ? holder : "unknown", path);
      close(fd);
      return -1;
    }
    /* A file system without locks (ENOLCK, EINVAL, EOPNOTSUPP) still gets
     * the run, unguarded; anything else is a real failure. */
    if (errno != ENOLCK && errno != EINVAL && errno != EOPNOTSUPP) {
      snprintf(msg, msg_size, "cannot lock %s: %s", path, strerror(errno));
      close(fd);
      return -1;
    }
  }
  char pid[32];
  int len = snprintf(pid, sizeof pid, "%ld\n", (long)getpid());
  if (ftruncate(fd, 0) != 0 || pwrite(fd, pid, (size_t)len, 0) != len) {
    snprintf(msg, msg_size, "cannot write %s: %s", path, strerror(errno));
    close(fd);
    return -1;
  }
  if (remove_debris(dir, msg, msg_size)) {
    close(fd);
    return -1;
  }
  return fd;
}

int run_dir_started(const char *dir) {
  static const char *const marks[] = {RUN_DIR_LOCK, "metrics.csv",
                                      "best.safetensors", "last.safetensors"};
  char path[4200];
  for (size_t i = 0; i < sizeof marks / sizeof marks[0]; i++) {
    snprintf(path, sizeof path, "%s/%s", dir, marks[i]);
    if (access(path, F_OK) == 0) return 1;
  }
  return 0;
}

int run_dir_clear(const char *dir, char *msg, size_t msg_size) {
  static const char *const files[] = {
      "metrics.csv", "best.safetensors", "last.safetensors", "summary.json",
      "curves.png", "curves.svg", "sweep.csv", "report.md",
      "sweep_val_accuracy.png", "sweep_val_accuracy.svg",
      "sweep_train_loss.png", "sweep_train_loss.svg", NULL};
  char path[4200];
  for (const char *const *f = files; *f; f++) {
    snprintf(path, sizeof path, "%s/%s", dir, *f);
    if (unlink(path) != 0 && errno != ENOENT) {
      snprintf(msg, msg_size, "--force: cannot remove %s: %s", path,
               strerror(errno));
      return -1;
    }
  }
  return 0;
}

int run_dir_same(const char *a, const char *b) {
  char ra[PATH_MAX], rb[PATH_MAX];
  return realpath(a, ra) && realpath(b, rb) && !strcmp(ra, rb);
}

int run_dir_probe(const char *target, char *msg, size_t msg_size) {
  char dir[4096];
  size_t len = strlen(target);
  if (len >= sizeof dir) {
    snprintf(msg, msg_size, "output directory path too long: %s", target);
    return -1;
  }
  memcpy(dir, target, len + 1);
  struct stat sb;
  for (;;) {
    while (len > 1 && dir[len - 1] == '/') dir[--len] = '\0';
    if (stat(dir, &sb) == 0) break;
    /* ENOTDIR: a file in the path; going up finds it and says so below. */
    if (errno != ENOENT && errno != ENOTDIR) {
      snprintf(msg, msg_size, "output directory %s: cannot access %s: %s",
               target, dir, strerror(errno));
      return -1;
    }
    /* Up one level; "." and "/" have none (a deleted working directory). */
    char *slash = strrchr(dir, '/');
    if (!strcmp(dir, ".") || !strcmp(dir, "/")) {
      snprintf(msg, msg_size, "output directory %s: %s is gone", target, dir);
      return -1;
    }
    if (!slash)
      snprintf(dir, sizeof dir, ".");
    else if (slash == dir)
      dir[1] = '\0'; /* "/x" goes up to "/" */
    else
      *slash = '\0';
    len = strlen(dir);
  }
  if (!S_ISDIR(sb.st_mode)) {
    snprintf(msg, msg_size, "output directory %s: %s is not a directory",
             target, dir);
    return -1;
  }
  char probe[4200];
  snprintf(probe, sizeof probe, "%s/.nnrun-probe-XXXXXX", dir);
  int fd = mkstemp(probe);
  if (fd < 0) {
    snprintf(msg, msg_size, "output directory %s: cannot create files in %s: %s",
             target, dir, strerror(errno));
    return -1;
  }
  close(fd);
  unlink(probe);
  return 0;
}

int run_dir_is_sweep(const char *dir) {
  DIR *d = opendir(dir);
  if (!d) return 0;
  int found = 0;
  struct dirent *e;
  char path[4400];
  while (!found && (e = readdir(d)) != NULL) {
    if (e->d_name[0] == '.') continue;
    snprintf(path, sizeof path, "%s/%s/" SWEEP_VALUES_FILE, dir, e->d_name);
    found = access(path, F_OK) == 0;
  }
  closedir(d);
  return found;
}
