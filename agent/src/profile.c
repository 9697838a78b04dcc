#include "profile.h"

#include "proto.h"

#include <c8y/plugin.h>

#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FW_FRAGMENT "c8y_Firmware"
#define SW_FRAGMENT "c8y_SoftwareUpdate"
#define CONF_FRAGMENT "c8y_DownloadConfigFile"

__attribute__((format(printf, 3, 4))) static int bad(char *err, size_t errlen,
                                                     const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, errlen, fmt, ap);
  va_end(ap);
  return C8Y_EINVAL;
}

static void free_strv(char **v, size_t n) {
  for (size_t i = 0; i < n; i++)
    free(v[i]);
  free(v);
}

void profile_plan_free(profile_plan *p) {
  if (!p)
    return;
  for (size_t i = 0; i < p->nsteps; i++) {
    free(p->steps[i].label);
    free_strv(p->steps[i].fields, p->steps[i].nfields);
    free(p->steps[i].json);
  }
  free(p->steps);
  free(p->profile_id);
  memset(p, 0, sizeof *p);
}

/* Appends a step whose parameters are `fields` (copied) and whose JSON
 * document is {fragment: value} (the reference is taken). */
static int add_step(profile_plan *p, const char *template_id,
                    const char *fragment, const char *label,
                    const char *const *fields, size_t n, json_t *value) {
  json_t *doc = value ? json_object() : NULL;
  if (doc)
    json_object_set_new(doc, fragment, value);
  char *json = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
  json_decref(doc);
  profile_step *grown = realloc(p->steps, (p->nsteps + 1) * sizeof *grown);
  if (!json || !grown) {
    free(json);
    if (grown)
      p->steps = grown;
    return C8Y_ENOMEM;
  }
  p->steps = grown;
  profile_step *s = &grown[p->nsteps];
  memset(s, 0, sizeof *s);
  s->template_id = template_id;
  s->fragment = fragment;
  s->json = json;
  s->label = strdup(label);
  s->fields = calloc(n + 1, sizeof *s->fields);
  bool ok = s->label && s->fields;
  for (size_t i = 0; ok && i < n; i++)
    ok = (s->fields[s->nfields++] = strdup(fields[i] ? fields[i] : "")) != NULL;
  p->nsteps++; /* freed with the plan, complete or not */
  return ok ? C8Y_OK : C8Y_ENOMEM;
}

/* ---- the parts, from either copy ---------------------------------------- */

typedef struct fw_part {
  const char *name, *version, *url, *dependency;
  bool patch;
} fw_part;

static int add_firmware(profile_plan *p, const fw_part *fw) {
  json_t *v = json_pack("{s:s, s:s, s:s}", "name", fw->name, "version",
                        fw->version, "url", fw->url);
  if (v && fw->patch) {
    json_object_set_new(v, "isPatch", json_true());
    json_object_set_new(v, "dependency", json_string(fw->dependency));
  }
  if (!v)
    return C8Y_ENOMEM;
  const char *fields[] = {fw->name, fw->version, fw->url, fw->dependency};
  /* A patch is 525 (name,version,url,dependency), as Cumulocity sends a
   * patch on its own. */
  return add_step(p, fw->patch ? "525" : "515", FW_FRAGMENT, "firmware", fields,
                  fw->patch ? 4 : 3, v);
}

typedef struct sw_item {
  const char *name, *version, *type, *url, *action;
} sw_item;

/* One step for all items, as one c8y_SoftwareUpdate: 529 (with types) when
 * any item names a type, else 528. */
static int add_software(profile_plan *p, const sw_item *it, size_t n) {
  if (n == 0)
    return C8Y_OK;
  bool typed = false;
  for (size_t i = 0; i < n; i++)
    typed = typed || it[i].type[0];
  size_t stride = typed ? 5 : 4;
  const char **fields = calloc(n * stride + 1, sizeof *fields);
  json_t *list = json_array();
  if (!fields || !list) {
    free(fields);
    json_decref(list);
    return C8Y_ENOMEM;
  }
  for (size_t i = 0; i < n; i++) {
    const char **f = fields + i * stride;
    *f++ = it[i].name;
    *f++ = it[i].version;
    if (typed)
      *f++ = it[i].type;
    *f++ = it[i].url;
    *f = it[i].action;
    json_t *o =
        json_pack("{s:s, s:s, s:s, s:s}", "name", it[i].name, "version",
                  it[i].version, "url", it[i].url, "action", it[i].action);
    if (o && it[i].type[0])
      json_object_set_new(o, "softwareType", json_string(it[i].type));
    json_array_append_new(list, o);
  }
  int rc = add_step(p, typed ? "529" : "528", SW_FRAGMENT, "software", fields,
                    n * stride, list);
  free(fields);
  return rc;
}

/* One 524 step per file: the configuration plugin applies (and rolls back)
 * one file per operation. */
static int add_configuration(profile_plan *p, const char *url,
                             const char *type) {
  char label[300];
  snprintf(label, sizeof label, "configuration %.200s", type);
  const char *fields[] = {url, type};
  json_t *v = json_pack("{s:s, s:s}", "url", url, "type", type);
  return v ? add_step(p, "524", CONF_FRAGMENT, label, fields, 2, v)
           : C8Y_ENOMEM;
}

/* ---- 527 / 531 ---------------------------------------------------------- */

enum { SEC_FW, SEC_SW, SEC_CONF, SEC_N };
static const char *const markers[SEC_N] = {"$FW", "$SW", "$CONF"};

static int marker_of(const char *field) {
  for (int k = 0; k < SEC_N; k++)
    if (strcmp(field, markers[k]) == 0)
      return k;
  return -1;
}

typedef struct sections {
  size_t start[SEC_N], len[SEC_N]; /* len 0 also for a missing section */
} sections;

/* Splits the parameters at $FW, $SW and $CONF. A section may be missing or
 * empty; they come in this order, each at most once, and nothing precedes
 * the first. */
static int split_sections(const char *tid, char *const *f, size_t n,
                          sections *s, char *err, size_t errlen) {
  memset(s, 0, sizeof *s);
  int cur = -1;
  for (size_t i = 0; i < n; i++) {
    int k = marker_of(f[i]);
    if (k < 0) {
      if (cur < 0)
        return bad(err, errlen,
                   "%s: parameter 1 is '%.40s', expected $FW, $SW or $CONF",
                   tid, f[i]);
      s->len[cur]++;
      continue;
    }
    if (k <= cur)
      return bad(err, errlen, "%s: %s after %s (the order is $FW, $SW, $CONF)",
                 tid, markers[k], markers[cur]);
    cur = k;
    s->start[k] = i + 1;
  }
  if (cur < 0)
    return bad(err, errlen, "%s: no $FW, $SW or $CONF section", tid);
  return C8Y_OK;
}

static int plan_from_line(const char *tid, char *const *f, size_t n,
                          profile_plan *p, char *err, size_t errlen) {
  bool typed = strcmp(tid, "531") == 0;
  if (!typed && strcmp(tid, "527") != 0)
    return bad(err, errlen, "template %s is no device profile", tid);
  sections s;
  int rc = split_sections(tid, f, n, &s, err, errlen);
  if (rc != C8Y_OK)
    return rc;
  char *const *fw = f + s.start[SEC_FW];
  size_t nfw = s.len[SEC_FW];
  if (nfw > 0 && (nfw < 3 || nfw > 5))
    return bad(err, errlen,
               "%s: $FW has %zu parameters, expected name,version,url"
               "[,isPatch[,dependency]]",
               tid, nfw);
  /* "$FW,,,,false," is no firmware: isPatch has its default. */
  bool any_fw = nfw > 0 && (fw[0][0] || fw[1][0] || fw[2][0]);
  if (any_fw) {
    if (!fw[0][0] || !fw[1][0])
      return bad(err, errlen,
                 "%s: $FW: firmware name and version must not be "
                 "empty",
                 tid);
    fw_part part = {fw[0], fw[1], fw[2], nfw > 4 ? fw[4] : "",
                    nfw > 3 && strcmp(fw[3], "true") == 0};
    if ((rc = add_firmware(p, &part)) != C8Y_OK)
      return rc;
  }
  size_t stride = typed ? 5 : 4;
  size_t nsw = s.len[SEC_SW];
  if (nsw % stride != 0)
    return bad(err, errlen,
               "%s: $SW has %zu parameters, not a multiple of %zu (%s)", tid,
               nsw, stride,
               typed ? "name,version,type,url,action"
                     : "name,version,url,"
                       "action");
  sw_item *items = calloc(nsw / stride + 1, sizeof *items);
  if (!items)
    return C8Y_ENOMEM;
  for (size_t i = 0; i < nsw / stride; i++) {
    char *const *it = f + s.start[SEC_SW] + i * stride;
    items[i] = (sw_item){it[0], it[1], typed ? it[2] : "", it[stride - 2],
                         it[stride - 1]};
    if (!items[i].name[0]) {
      free(items);
      return bad(err, errlen, "%s: $SW item %zu has an empty name", tid, i + 1);
    }
  }
  rc = add_software(p, items, nsw / stride);
  free(items);
  if (rc != C8Y_OK)
    return rc;
  size_t nconf = s.len[SEC_CONF];
  if (nconf % 2 != 0)
    return bad(err, errlen,
               "%s: $CONF has %zu parameters, not pairs of url,type", tid,
               nconf);
  for (size_t i = 0; i < nconf / 2 && rc == C8Y_OK; i++) {
    char *const *c = f + s.start[SEC_CONF] + i * 2;
    if (!c[1][0])
      return bad(err, errlen, "%s: $CONF item %zu has an empty type", tid,
                 i + 1);
    rc = add_configuration(p, c[0], c[1]);
  }
  return rc;
}

/* ---- the JSON document -------------------------------------------------- */

/* A string member; "" when absent and not `required`. NULL: wrong type or
 * missing (the reason in err). */
static const char *member(json_t *o, const char *key, bool required,
                          const char *where, char *err, size_t errlen) {
  json_t *v = json_object_get(o, key);
  if (json_is_string(v))
    return json_string_value(v);
  if (!v || json_is_null(v)) {
    if (!required)
      return "";
    bad(err, errlen, "%s.%s is missing", where, key);
    return NULL;
  }
  bad(err, errlen, "%s.%s is not a string", where, key);
  return NULL;
}

static int json_firmware(json_t *fw, profile_plan *p, char *err,
                         size_t errlen) {
  if (!fw || json_is_null(fw) || (json_is_object(fw) && !json_object_size(fw)))
    return C8Y_OK;
  const char *where = PROFILE_FRAGMENT ".firmware";
  if (!json_is_object(fw))
    return bad(err, errlen, "%s is not an object", where);
  fw_part part = {0};
  if (!(part.name = member(fw, "name", true, where, err, errlen)) ||
      !(part.version = member(fw, "version", true, where, err, errlen)) ||
      !(part.url = member(fw, "url", false, where, err, errlen)) ||
      !(part.dependency = member(fw, "dependency", false, where, err, errlen)))
    return C8Y_EINVAL;
  if (!part.name[0] || !part.version[0])
    return bad(err, errlen, "%s: name and version must not be empty", where);
  json_t *patch = json_object_get(fw, "isPatch");
  part.patch =
      json_is_true(patch) ||
      (json_is_string(patch) && strcmp(json_string_value(patch), "true") == 0);
  return add_firmware(p, &part);
}

static int json_software(json_t *sw, profile_plan *p, char *err,
                         size_t errlen) {
  if (!sw || json_is_null(sw))
    return C8Y_OK;
  if (!json_is_array(sw))
    return bad(err, errlen, PROFILE_FRAGMENT ".software is not an array");
  size_t n = json_array_size(sw);
  sw_item *items = calloc(n + 1, sizeof *items);
  if (!items)
    return C8Y_ENOMEM;
  int rc = C8Y_OK;
  for (size_t i = 0; i < n && rc == C8Y_OK; i++) {
    char where[64];
    snprintf(where, sizeof where, PROFILE_FRAGMENT ".software.%zu", i);
    json_t *o = json_array_get(sw, i);
    sw_item *it = &items[i];
    if (!json_is_object(o))
      rc = bad(err, errlen, "%s is not an object", where);
    else if (!(it->name = member(o, "name", true, where, err, errlen)) ||
             !(it->version = member(o, "version", false, where, err, errlen)) ||
             !(it->type =
                   member(o, "softwareType", false, where, err, errlen)) ||
             !(it->url = member(o, "url", false, where, err, errlen)) ||
             !(it->action = member(o, "action", true, where, err, errlen)))
      rc = C8Y_EINVAL;
    else if (!it->name[0])
      rc = bad(err, errlen, "%s.name is empty", where);
  }
  if (rc == C8Y_OK)
    rc = add_software(p, items, n);
  free(items);
  return rc;
}

static int json_configuration(json_t *conf, profile_plan *p, char *err,
                              size_t errlen) {
  if (!conf || json_is_null(conf))
    return C8Y_OK;
  if (!json_is_array(conf))
    return bad(err, errlen, PROFILE_FRAGMENT ".configuration is not an array");
  int rc = C8Y_OK;
  for (size_t i = 0; i < json_array_size(conf) && rc == C8Y_OK; i++) {
    char where[64];
    snprintf(where, sizeof where, PROFILE_FRAGMENT ".configuration.%zu", i);
    json_t *o = json_array_get(conf, i);
    const char *url, *type;
    if (!json_is_object(o))
      rc = bad(err, errlen, "%s is not an object", where);
    else if (!(url = member(o, "url", true, where, err, errlen)) ||
             !(type = member(o, "type", true, where, err, errlen)))
      rc = C8Y_EINVAL;
    else if (!type[0])
      rc = bad(err, errlen, "%s.type is empty", where);
    else
      rc = add_configuration(p, url, type);
  }
  return rc;
}

/* profileId as a string ("158751"; a number is taken too). */
static int json_profile_id(json_t *doc, profile_plan *p) {
  json_t *v = json_object_get(doc, "profileId");
  char buf[64];
  const char *id = NULL;
  if (json_is_string(v) && json_string_length(v) > 0)
    id = json_string_value(v);
  else if (json_is_integer(v)) {
    snprintf(buf, sizeof buf, "%lld", (long long)json_integer_value(v));
    id = buf;
  }
  if (id && !(p->profile_id = strdup(id)))
    return C8Y_ENOMEM;
  return C8Y_OK;
}

void profile_plan_learn_id(profile_plan *p, const char *json) {
  json_t *doc = !p->profile_id && json ? json_loads(json, 0, NULL) : NULL;
  if (doc)
    json_profile_id(doc, p);
  json_decref(doc);
}

static int plan_from_json(json_t *doc, profile_plan *p, char *err,
                          size_t errlen) {
  json_t *dp = json_object_get(doc, PROFILE_FRAGMENT);
  int rc = json_profile_id(doc, p);
  if (rc == C8Y_OK)
    rc = json_firmware(json_object_get(dp, "firmware"), p, err, errlen);
  if (rc == C8Y_OK)
    rc = json_software(json_object_get(dp, "software"), p, err, errlen);
  if (rc == C8Y_OK)
    rc = json_configuration(json_object_get(dp, "configuration"), p, err,
                            errlen);
  return rc;
}

int profile_plan_new(const char *template_id, char *const *fields, size_t n,
                     const char *json, profile_plan *out, char *err,
                     size_t errlen) {
  memset(out, 0, sizeof *out);
  json_t *doc = json ? json_loads(json, 0, NULL) : NULL;
  int rc;
  if (json_is_object(json_object_get(doc, PROFILE_FRAGMENT)))
    rc = plan_from_json(doc, out, err, errlen);
  else if (template_id)
    rc = plan_from_line(template_id, fields, n, out, err, errlen);
  else
    rc = bad(err, errlen,
             "the operation carries no " PROFILE_FRAGMENT " object");
  json_decref(doc);
  if (rc == C8Y_ENOMEM)
    snprintf(err, errlen, "out of memory in the agent");
  if (rc != C8Y_OK)
    profile_plan_free(out);
  return rc;
}

/* ---- twins ---------------------------------------------------------------
 */

/* Whether `typed` (531/529 parameters) equals `plain` (527/528) without
 * each software item's type. sw_from: where the software items start in
 * each (both 0 for 528/529); sw_len: their parameter counts. */
static bool same_without_types(char *const *plain, size_t np,
                               char *const *typed, size_t nt, size_t sw_from,
                               size_t np_sw, size_t nt_sw) {
  if (np_sw % 4 || nt_sw % 5 || np_sw / 4 != nt_sw / 5 ||
      np - np_sw != nt - nt_sw)
    return false;
  for (size_t i = 0; i < sw_from; i++)
    if (strcmp(plain[i], typed[i]) != 0)
      return false;
  for (size_t k = 0; k < np_sw / 4; k++) {
    char *const *a = plain + sw_from + 4 * k;
    char *const *b = typed + sw_from + 5 * k;
    if (strcmp(a[0], b[0]) || strcmp(a[1], b[1]) || strcmp(a[2], b[3]) ||
        strcmp(a[3], b[4]))
      return false;
  }
  for (size_t i = sw_from + np_sw; i < np; i++)
    if (strcmp(plain[i], typed[i - np_sw + nt_sw]) != 0)
      return false;
  return true;
}

bool profile_twins(const char *template_a, char *const *a, size_t na,
                   const char *template_b, char *const *b, size_t nb) {
  if (!template_a || !template_b)
    return false;
  const char *richer = proto_richer_twin(template_a);
  if (!richer) { /* a is the typed one, or no twin at all */
    const char *t = template_a;
    char *const *f = a;
    size_t n = na;
    template_a = template_b, a = b, na = nb;
    template_b = t, b = f, nb = n;
    richer = proto_richer_twin(template_a);
  }
  if (!richer || strcmp(richer, template_b) != 0)
    return false;
  if (strcmp(template_a, "528") == 0)
    return same_without_types(a, na, b, nb, 0, na, nb);
  /* 527/531: the same sections, software items 4 vs 5 parameters. */
  sections sa, sb;
  char e[8];
  if (split_sections("527", a, na, &sa, e, sizeof e) != C8Y_OK ||
      split_sections("531", b, nb, &sb, e, sizeof e) != C8Y_OK ||
      sa.start[SEC_SW] != sb.start[SEC_SW])
    return false;
  return same_without_types(a, na, b, nb, sa.start[SEC_SW], sa.len[SEC_SW],
                            sb.len[SEC_SW]);
}

/* ---- what the root can run ---------------------------------------------- */

reg_handler *profile_step_handler(registry *r, const profile_step *s) {
  return registry_handler_for(r, s->template_id, s->fragment, NULL);
}

bool profile_supported(registry *r) {
  return !registry_fragment_handler_for(r, PROFILE_FRAGMENT, NULL) &&
         registry_handler_for(r, "515", FW_FRAGMENT, NULL) &&
         (registry_handler_for(r, "528", SW_FRAGMENT, NULL) ||
          registry_handler_for(r, "529", SW_FRAGMENT, NULL)) &&
         registry_handler_for(r, "524", CONF_FRAGMENT, NULL);
}

char *profile_supported_operations(registry *r) {
  char *list = registry_supported_operations(r);
  if (!list || !profile_supported(r))
    return list;
  size_t n = strlen(list);
  char *grown = realloc(list, n + sizeof "," PROFILE_FRAGMENT);
  if (!grown) {
    free(list);
    return NULL;
  }
  snprintf(grown + n, sizeof "," PROFILE_FRAGMENT, "%s" PROFILE_FRAGMENT,
           n ? "," : "");
  return grown;
}
