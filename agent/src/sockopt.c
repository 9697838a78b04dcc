#include "sockopt.h"

#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>

static int peer_port_of(int fd) {
  struct sockaddr_storage ss;
  socklen_t len = sizeof ss;
  if (getpeername(fd, (struct sockaddr *)&ss, &len) != 0)
    return -1;
  if (ss.ss_family == AF_INET)
    return ntohs(((struct sockaddr_in *)&ss)->sin_port);
  if (ss.ss_family == AF_INET6)
    return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
  return -1;
}

static int is_tcp(int fd) {
  int type = 0, proto = 0;
  socklen_t len = sizeof type;
  if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) != 0 ||
      type != SOCK_STREAM)
    return 0;
  len = sizeof proto;
  return getsockopt(fd, SOL_SOCKET, SO_PROTOCOL, &proto, &len) == 0 &&
         proto == IPPROTO_TCP;
}

int sockopt_nodelay_to_port(int peer_port) {
  DIR *d = opendir("/proc/self/fd");
  if (!d)
    return 0;
  int changed = 0, one = 1;
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    char *end;
    long fd = strtol(e->d_name, &end, 10);
    if (*end || end == e->d_name || fd == dirfd(d))
      continue;
    struct stat st;
    if (fstat((int)fd, &st) != 0 || !S_ISSOCK(st.st_mode))
      continue;
    if (!is_tcp((int)fd) || peer_port_of((int)fd) != peer_port)
      continue;
    if (setsockopt((int)fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) == 0)
      changed++;
  }
  closedir(d);
  return changed;
}

int sockopt_cloexec_all(void) {
  DIR *d = opendir("/proc/self/fd");
  if (!d)
    return 0;
  int changed = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    char *end;
    long fd = strtol(e->d_name, &end, 10);
    if (*end || end == e->d_name || fd <= 2)
      continue;
    int flags = fcntl((int)fd, F_GETFD);
    if (flags >= 0 && !(flags & FD_CLOEXEC) &&
        fcntl((int)fd, F_SETFD, flags | FD_CLOEXEC) == 0)
      changed++;
  }
  closedir(d);
  return changed;
}
