/* Source: Cumulocity's fragment library, "Device parameter" (c8y-docs
 * content/device-integration/fragment-library-bundle/device-parameter.md):
 * 532 carries "a repeating 3-set sequence of name (representing the
 * fragment path), type, and value", e.g.
 *   532,DeviceSerial,c8y_RelayStatus.left,b,false,c8y_RelayStatus.right,b,true
 * The device applies them, reports the new state with 408 (event
 * c8y_ParameterUpdate, mirrored into the managed object) and then sets the
 * operation SUCCESSFUL, or FAILED "if the configuration cannot be
 * applied":
 *   408,,,true,c8y_RelayStatus.left,BOOLEAN,false,c8y_RelayStatus.right,...
 * (text and time empty: the defaults; changeDetect true: an event only for
 * a value that differs from the inventory's). Type codes seen in the docs
 * and in c8y-docs PR #3716: b (boolean), s (string), and an empty type
 * with an empty value for null. n (number) is inferred from 408's NUMBER;
 * any other code is refused before the hook runs, since its value could
 * not be reported truthfully. 408's type names are not listed either
 * (c8y-protocol.md section 7): BOOLEAN is the docs', STRING and NUMBER
 * follow it; a null goes as STRING with no value (408's value defaults to
 * null). */
#define _POSIX_C_SOURCE 200809L
#include "exec_param.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FIELDS_PER_PARAM 3

/* 408's type for a 532 type code, or NULL for one it cannot carry. */
static const char *type_408(const char *code) {
  if (strcmp(code, "b") == 0)
    return "BOOLEAN";
  if (strcmp(code, "s") == 0 || !*code)
    return "STRING";
  if (strcmp(code, "n") == 0)
    return "NUMBER";
  return NULL;
}

static int is_number(const char *v) {
  char *end = NULL;
  double d = *v ? strtod(v, &end) : 0;
  return *v && end && !*end && isfinite(d);
}

int exec_param_check(const c8y_api *api, c8y_operation *op, size_t max_fields,
                     char *why, size_t whylen) {
  size_t n = api->op_field_count(op);
  if (n == 0 || n % FIELDS_PER_PARAM != 0) {
    snprintf(why, whylen,
             "c8y_ParameterUpdate: %zu parameters are not sets of "
             "path,type,value",
             n);
    return 0;
  }
  if (n > max_fields) {
    snprintf(why, whylen,
             "c8y_ParameterUpdate: %zu parameters are more than the command "
             "can be given (%zu sets of path,type,value)",
             n / FIELDS_PER_PARAM, max_fields / FIELDS_PER_PARAM);
    return 0;
  }
  for (size_t i = 0; i < n; i += FIELDS_PER_PARAM) {
    const char *path = api->op_field(op, i);
    const char *code = api->op_field(op, i + 1);
    const char *value = api->op_field(op, i + 2);
    size_t k = i / FIELDS_PER_PARAM + 1;
    const char *bad = NULL;
    if (!*path)
      bad = "an empty path";
    else if (!type_408(code))
      bad = "an unknown type code (b, s, n or empty for null)";
    else if (!*code && *value)
      bad = "a value but no type";
    else if (strcmp(code, "b") == 0 && strcmp(value, "true") != 0 &&
             strcmp(value, "false") != 0)
      bad = "type b with a value that is not true or false";
    else if (strcmp(code, "n") == 0 && !is_number(value))
      bad = "type n with a value that is not a number";
    if (bad) {
      snprintf(why, whylen,
               "c8y_ParameterUpdate: parameter %zu (%.200s, type '%.20s') has "
               "%s",
               k, path, code, bad);
      return 0;
    }
  }
  return 1;
}

int exec_param_report(const c8y_api *api, c8y_plugin *self, c8y_operation *op,
                      char *why, size_t whylen) {
  size_t n = api->op_field_count(op);
  const char **fields = calloc(4 + n, sizeof *fields);
  if (!fields) {
    snprintf(why, whylen, "out of memory");
    return C8Y_ENOMEM;
  }
  fields[0] = "408";
  fields[1] = ""; /* text: the platform's default */
  fields[2] = ""; /* time: now */
  fields[3] = "true";
  for (size_t i = 0; i < n; i += FIELDS_PER_PARAM) {
    fields[4 + i] = api->op_field(op, i);
    fields[4 + i + 1] = type_408(api->op_field(op, i + 1));
    fields[4 + i + 2] = api->op_field(op, i + 2);
  }
  int rc = api->send_static(self, NULL, fields, 4 + n);
  /* Too long for one line: one 408 per parameter. */
  for (size_t i = 0; rc == C8Y_ETOOBIG && i < n; i += FIELDS_PER_PARAM) {
    const char *one[] = {"408",         "",           "", "true", fields[4 + i],
                         fields[5 + i], fields[6 + i]};
    rc = api->send_static(self, NULL, one, 7);
  }
  free(fields);
  if (rc != C8Y_OK)
    snprintf(why, whylen,
             "the parameters were applied, but their 408 could not be "
             "queued: %s",
             api->status_str(rc));
  return rc;
}
