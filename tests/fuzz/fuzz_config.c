/* libFuzzer target for the config parser: the input becomes agent.ini in a
 * private temporary file (mode 600, so password= lines get past the
 * permission check and deeper code runs). A conf.d next to it in /tmp is
 * unlikely and harmless: drop-ins would only be parsed as well. */
#include "config.h"
#include "log.h"

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static int quiet;
  if (!quiet) {
    /* qos=2 and verify_hostname=off warnings would flood the output. */
    log_set_level(LOG_LVL_ERROR);
    quiet = 1;
  }
  char path[] = "/tmp/fuzz_config-XXXXXX";
  int fd = mkstemp(path);
  if (fd < 0)
    abort();
  if (fchmod(fd, 0600) != 0)
    abort();
  size_t off = 0;
  while (off < size) {
    ssize_t n = write(fd, data + off, size - off);
    if (n <= 0)
      abort();
    off += (size_t)n;
  }
  close(fd);

  agent_config c;
  char err[256];
  if (config_load(path, &c, err, sizeof err) == 0) {
    free(config_client_id(&c));
    free(config_username(&c));
    if (c.nentries > 0)
      (void)config_plugin_lookup(
          &c, c.entries[0].section + sizeof "plugin." - 1, c.entries[0].key);
    config_free(&c);
  }
  unlink(path);
  return 0;
}
