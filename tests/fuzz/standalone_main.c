/* Replays fuzz inputs without libFuzzer, so ctest can run every corpus with
 * any compiler: each argument is a file or a directory of files, and each
 * file is passed once to LLVMFuzzerTestOneInput. A crash or an abort in the
 * target fails the run. */
#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv) __attribute__((weak));

static int run_file(const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f) {
    fprintf(stderr, "%s: %s\n", path, strerror(errno));
    return -1;
  }
  size_t cap = 4096, len = 0;
  uint8_t *buf = malloc(cap);
  size_t n;
  while (buf && (n = fread(buf + len, 1, cap - len, f)) > 0) {
    len += n;
    if (len == cap) {
      uint8_t *nb = realloc(buf, cap *= 2);
      if (!nb) {
        free(buf);
        buf = NULL;
      } else {
        buf = nb;
      }
    }
  }
  int err = ferror(f);
  fclose(f);
  if (!buf || err) {
    fprintf(stderr, "%s: %s\n", path, buf ? "read error" : strerror(ENOMEM));
    free(buf);
    return -1;
  }
  /* An exact-size copy lets ASan catch reads past the input's end. */
  uint8_t *exact = malloc(len ? len : 1);
  if (!exact) {
    free(buf);
    return -1;
  }
  memcpy(exact, buf, len);
  free(buf);
  fprintf(stderr, "replay: %s (%zu bytes)\n", path, len);
  LLVMFuzzerTestOneInput(exact, len);
  free(exact);
  return 0;
}

static int skip_dot(const struct dirent *d) { return d->d_name[0] != '.'; }

static int run_path(const char *path, size_t *count) {
  struct stat sb;
  if (stat(path, &sb) < 0) {
    fprintf(stderr, "%s: %s\n", path, strerror(errno));
    return -1;
  }
  if (!S_ISDIR(sb.st_mode)) {
    if (run_file(path) < 0)
      return -1;
    (*count)++;
    return 0;
  }
  struct dirent **names;
  int n = scandir(path, &names, skip_dot, alphasort);
  if (n < 0) {
    fprintf(stderr, "%s: %s\n", path, strerror(errno));
    return -1;
  }
  int rc = 0;
  for (int i = 0; i < n; i++) {
    char *sub = NULL;
    if (rc == 0 && asprintf(&sub, "%s/%s", path, names[i]->d_name) < 0)
      rc = -1;
    if (rc == 0 && stat(sub, &sb) == 0 && S_ISREG(sb.st_mode)) {
      if (run_file(sub) < 0)
        rc = -1;
      else
        (*count)++;
    }
    free(sub);
    free(names[i]);
  }
  free(names);
  return rc;
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: %s FILE_OR_DIR...\n", argv[0]);
    return 2;
  }
  if (LLVMFuzzerInitialize)
    LLVMFuzzerInitialize(&argc, &argv);
  size_t count = 0;
  for (int i = 1; i < argc; i++)
    if (run_path(argv[i], &count) < 0)
      return 1;
  if (count == 0) {
    fprintf(stderr, "no inputs found in the given paths\n");
    return 1;
  }
  printf("replayed %zu inputs without a crash\n", count);
  return 0;
}
