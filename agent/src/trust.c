/* Also compiled into the bundled plugins' common library, which gets no
 * _GNU_SOURCE from the build. */
#ifndef _GNU_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif
#include "trust.h"

#include <pthread.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#ifndef C8Y_SERVICE_USER
#define C8Y_SERVICE_USER "c8y-agent"
#endif

static pthread_once_t service_once = PTHREAD_ONCE_INIT;
static bool service_known;
static uid_t service_uid;

/* Looked up once: NSS may be slow, and the account does not change under a
 * running agent. */
static void service_lookup(void) {
  struct passwd pw, *res = NULL;
  char buf[4096];
  if (getpwnam_r(C8Y_SERVICE_USER, &pw, buf, sizeof buf, &res) == 0 && res) {
    service_uid = pw.pw_uid;
    service_known = true;
  }
}

const char *trust_service_user(void) { return C8Y_SERVICE_USER; }

bool trust_uid(uid_t uid) {
  if (uid == 0 || uid == geteuid())
    return true;
  pthread_once(&service_once, service_lookup);
  return service_known && uid == service_uid;
}

bool trust_writer(uid_t uid, uid_t also) {
  return trust_uid(uid) || (also != (uid_t)-1 && uid == also);
}

bool trust_stat(const struct stat *st, uid_t also) {
  return trust_writer(st->st_uid, also) && !(st->st_mode & S_IWOTH) &&
         (!(st->st_mode & S_IWGRP) || st->st_gid == 0);
}

void trust_why(const struct stat *st, uid_t also, char *out, size_t n) {
  unsigned mode = (unsigned)(st->st_mode & 07777);
  if (!trust_writer(st->st_uid, also))
    snprintf(out, n, "is owned by uid %u", (unsigned)st->st_uid);
  else if (st->st_mode & S_IWOTH)
    snprintf(out, n, "is writable by others (mode %04o)", mode);
  else if ((st->st_mode & S_IWGRP) && st->st_gid != 0)
    snprintf(out, n, "is writable by group %u (mode %04o)",
             (unsigned)st->st_gid, mode);
  else if (n)
    out[0] = '\0';
}
