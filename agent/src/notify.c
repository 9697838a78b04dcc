#include "notify.h"

#include <c8y/plugin.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

int notify_send(const char *state) {
  const char *path = getenv("NOTIFY_SOCKET");
  if (!path || !*path)
    return 0;
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  size_t len = strlen(path);
  if (len >= sizeof sa.sun_path || (path[0] != '/' && path[0] != '@'))
    return C8Y_EINVAL;
  memcpy(sa.sun_path, path, len);
  if (sa.sun_path[0] == '@')
    sa.sun_path[0] = 0; /* abstract namespace */
  int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return C8Y_EIO;
  socklen_t salen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len);
  ssize_t n = sendto(fd, state, strlen(state), MSG_NOSIGNAL,
                     (struct sockaddr *)&sa, salen);
  close(fd);
  return n < 0 ? C8Y_EIO : C8Y_OK;
}

long long notify_watchdog_interval_ms(void) {
  const char *usec = getenv("WATCHDOG_USEC");
  if (!usec)
    return 0;
  const char *pid = getenv("WATCHDOG_PID");
  if (pid && atol(pid) != (long)getpid())
    return 0;
  long long us = atoll(usec);
  return us > 0 ? us / 2000 : 0;
}
