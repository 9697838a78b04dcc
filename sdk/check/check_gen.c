/* check_gen: see check_gen.h. */
#include "check_gen.h"

#include "profile.h"
#include "proto.h"
#include "smartrest.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The parameters after the device id of each static operation template
 * (shared c8y-protocol.md section 3); [...] repeats (twice in a valid
 * line), $... is a literal marker. */
static const struct shape {
  const char *id;
  const char *fields;
} shapes[] = {
    {"510", ""},
    {"511", "cmd"},
    {"513", "config"},
    {"515", "name,version,url"},
    {"516", "[name,version,url]"},
    {"517", "request"},
    {"518", "relay"},
    {"519", "[relay]"},
    {"520", ""},
    {"521", "url"},
    {"522", "log,from,to,search,lines"},
    {"523", "mode"},
    {"524", "url,ctype"},
    {"525", "name,version,url,dep"},
    {"526", "ctype"},
    {"527", "$FW,name,version,url,patch,dep,$SW,[name,version,url,action],"
            "$CONF,[url,ctype]"},
    {"528", "[name,version,url,action]"},
    {"529", "[name,version,stype,url,action]"},
    {"530", "host,port,key"},
    {"531", "$FW,name,version,url,patch,dep,$SW,[name,version,stype,url,"
            "action],$CONF,[url,ctype]"},
    {"532", "[ppath,pcode,pvalue]"},
};

static const char *const quoted_text =
    "c8y-plugin-check \"quoted\", comma\nsecond line";
static const char *const not_utf8 = "c8y-plugin-check \xff\xfe";

/* A NULL-terminated list of malloc'ed strings. */
typedef struct strv {
  char **v;
  size_t n;
} strv;

static void strv_add(strv *s, const char *x) {
  char **grown = realloc(s->v, (s->n + 2) * sizeof *grown);
  if (!grown)
    abort();
  s->v = grown;
  s->v[s->n] = strdup(x ? x : "");
  if (!s->v[s->n])
    abort();
  s->v[++s->n] = NULL;
}

static void strv_free(strv *s) {
  for (size_t i = 0; i < s->n; i++)
    free(s->v[i]);
  free(s->v);
  s->v = NULL;
  s->n = 0;
}

static char *xstrdup(const char *s) {
  char *d = strdup(s ? s : "");
  if (!d)
    abort();
  return d;
}

static char *long_field(void) {
  char *s = malloc(CHECK_LONG_FIELD + 1);
  if (!s)
    abort();
  memset(s, 'x', CHECK_LONG_FIELD);
  s[CHECK_LONG_FIELD] = '\0';
  return s;
}

static const char *valid_value(const char *kind, int rep,
                               const check_hints *h) {
  static const struct {
    const char *kind, *first, *second;
  } values[] = {
      {"cmd", "echo c8y-plugin-check", NULL},
      {"config", "c8y_plugin_check=1\nsecond=2", NULL},
      {"name", "c8y-plugin-check", "c8y-plugin-check-b"},
      {"version", "1.0", "2.0"},
      {"relay", "OPEN", "CLOSED"},
      {"mode", "SMS", NULL},
      {"from", "2024-01-01T00:00:00.000+00:00", NULL},
      {"to", "2024-01-02T00:00:00.000+00:00", NULL},
      {"search", "c8y-plugin-check", NULL},
      {"lines", "10", NULL},
      {"dep", "c8y-plugin-check-base", NULL},
      {"action", "install", NULL},
      {"stype", "c8y-plugin-check", NULL},
      {"patch", "false", NULL},
      {"host", "127.0.0.1", NULL},
      {"port", "22", NULL},
      {"key", "c8y-plugin-check-key", NULL},
      {"ppath", "c8y_PluginCheck.value", "c8y_PluginCheck.flag"},
      {"pcode", "s", "b"},
      {"pvalue", "c8y-plugin-check", "true"},
      {"request", "c8y-plugin-check", NULL},
  };
  if (kind[0] == '$')
    return kind;
  if (strcmp(kind, "url") == 0)
    return h->url;
  if (strcmp(kind, "ctype") == 0)
    return h->config_type ? h->config_type : "c8y-plugin-check";
  if (strcmp(kind, "log") == 0)
    return h->log_type ? h->log_type : "c8y-plugin-check";
  for (size_t i = 0; i < sizeof values / sizeof values[0]; i++)
    if (strcmp(values[i].kind, kind) == 0)
      return rep && values[i].second ? values[i].second : values[i].first;
  return "c8y-plugin-check";
}

/* The valid fields of a shape, groups repeated twice, and the kind of
 * each (markers, "$...", are left alone by the malformed variants). */
static void valid_fields(const char *spec, const check_hints *h, strv *out,
                         strv *kinds) {
  char *copy = xstrdup(spec), *save = NULL;
  strv group_kinds = {0};
  bool in_group = false;
  for (char *tok = strtok_r(copy, ",", &save); tok;
       tok = strtok_r(NULL, ",", &save)) {
    bool open = tok[0] == '[';
    size_t len = strlen(tok);
    bool close = len && tok[len - 1] == ']';
    if (open)
      tok++, in_group = true;
    if (close)
      tok[strlen(tok) - 1] = '\0';
    if (in_group) {
      strv_add(&group_kinds, tok);
    } else {
      strv_add(out, valid_value(tok, 0, h));
      strv_add(kinds, tok);
    }
    if (close) {
      for (int rep = 0; rep < 2; rep++)
        for (size_t i = 0; i < group_kinds.n; i++) {
          strv_add(out, valid_value(group_kinds.v[i], rep, h));
          strv_add(kinds, group_kinds.v[i]);
        }
      strv_free(&group_kinds);
      in_group = false;
    }
  }
  strv_free(&group_kinds);
  free(copy);
}

/* "a,b,\"c\"" cut for the report, with the full length when cut. */
static char *shown_of(const char *text) {
  size_t len = strlen(text);
  char buf[160];
  if (len <= 80) {
    snprintf(buf, sizeof buf, "%s", text);
  } else {
    snprintf(buf, sizeof buf, "%.60s... (%zu bytes)", text, len);
  }
  /* One report line: newlines and tabs become visible escapes. */
  char out[400];
  size_t o = 0;
  for (const char *c = buf; *c && o + 3 < sizeof out; c++) {
    if (*c == '\n' || *c == '\t' || *c == '\r') {
      out[o++] = '\\';
      out[o++] = *c == '\n' ? 'n' : *c == '\t' ? 't' : 'r';
    } else {
      out[o++] = *c;
    }
  }
  out[o] = '\0';
  return xstrdup(out);
}

static char *encode_fields(char *const *fields, size_t n) {
  smartrest_buf b;
  smartrest_buf_init(&b);
  if (smartrest_encode_line(&b, (const char *const *)fields, n) != 0)
    abort();
  char *s = xstrdup(b.data ? b.data : "");
  smartrest_buf_free(&b);
  return s;
}

static void add_case(check_cases *out, check_case c) {
  check_case *grown = realloc(out->v, (out->n + 1) * sizeof *grown);
  if (!grown)
    abort();
  out->v = grown;
  out->v[out->n++] = c;
}

/* A line "<head>,<device>,<fields>" (the fields may be none). */
static char *line_of(const char *head, const char *device, const char *params) {
  char *line = NULL;
  char *dev = smartrest_encode_field(device);
  if (!dev ||
      asprintf(&line, "%s,%s%s%s", head, dev, *params ? "," : "", params) < 0)
    abort();
  free(dev);
  return line;
}

static void add_line_case(check_cases *out, check_channel ch, const char *what,
                          const char *fragment, const char *head,
                          const char *device, const char *variant,
                          char *const *fields, size_t n, const char *xid) {
  char *params = encode_fields(fields, n);
  add_case(out, (check_case){.channel = ch,
                             .what = xstrdup(what),
                             .fragment = xstrdup(fragment),
                             .device = xstrdup(device),
                             .variant = xstrdup(variant),
                             .shown = shown_of(params),
                             .line = line_of(head, device, params),
                             .xid = xid ? xstrdup(xid) : NULL});
  free(params);
}

/* ---- JSON ---- */

static json_t *jstr(const char *s) { return json_string(s); }

static json_t *obj(const char *k1, json_t *v1, const char *k2, json_t *v2,
                   const char *k3, json_t *v3) {
  json_t *o = json_object();
  if (k1)
    json_object_set_new(o, k1, v1);
  if (k2)
    json_object_set_new(o, k2, v2);
  if (k3)
    json_object_set_new(o, k3, v3);
  return o;
}

static json_t *software_item(const check_hints *h, bool typed) {
  json_t *o = obj("name", jstr("c8y-plugin-check"), "version", jstr("1.0"),
                  "url", jstr(h->url));
  json_object_set_new(o, "action", jstr("install"));
  if (typed)
    json_object_set_new(o, "softwareType", jstr("c8y-plugin-check"));
  return o;
}

/* The fragment's usual value (Cumulocity's device-management fragment
 * library), or NULL when the kit does not know the fragment. */
static json_t *fragment_value(const char *fragment, const check_hints *h) {
  const char *ctype = valid_value("ctype", 0, h);
  if (strcmp(fragment, "c8y_Restart") == 0)
    return json_object();
  if (strcmp(fragment, "c8y_Command") == 0)
    return obj("text", jstr(valid_value("cmd", 0, h)), 0, 0, 0, 0);
  if (strcmp(fragment, "c8y_Configuration") == 0)
    return obj("config", jstr(valid_value("config", 0, h)), 0, 0, 0, 0);
  if (strcmp(fragment, "c8y_Firmware") == 0)
    return obj("name", jstr("c8y-plugin-check"), "version", jstr("1.0"), "url",
               jstr(h->url));
  if (strcmp(fragment, "c8y_SoftwareList") == 0) {
    json_t *a = json_array();
    json_array_append_new(a, obj("name", jstr("c8y-plugin-check"), "version",
                                 jstr("1.0"), "url", jstr(h->url)));
    return a;
  }
  if (strcmp(fragment, "c8y_SoftwareUpdate") == 0) {
    json_t *a = json_array();
    json_array_append_new(a, software_item(h, true));
    return a;
  }
  if (strcmp(fragment, "c8y_MeasurementRequestOperation") == 0)
    return obj("requestName", jstr("c8y-plugin-check"), 0, 0, 0, 0);
  if (strcmp(fragment, "c8y_Relay") == 0)
    return obj("relayState", jstr("OPEN"), 0, 0, 0, 0);
  if (strcmp(fragment, "c8y_RelayArray") == 0) {
    json_t *a = json_array();
    json_array_append_new(a, jstr("OPEN"));
    json_array_append_new(a, jstr("CLOSED"));
    return a;
  }
  if (strcmp(fragment, "c8y_UploadConfigFile") == 0)
    return obj("type", jstr(ctype), 0, 0, 0, 0);
  if (strcmp(fragment, "c8y_DownloadConfigFile") == 0)
    return obj("url", jstr(h->url), "type", jstr(ctype), 0, 0);
  if (strcmp(fragment, "c8y_LogfileRequest") == 0) {
    json_t *o = obj("logFile", jstr(valid_value("log", 0, h)), "dateFrom",
                    jstr(valid_value("from", 0, h)), "dateTo",
                    jstr(valid_value("to", 0, h)));
    json_object_set_new(o, "searchText", jstr(""));
    json_object_set_new(o, "maximumLines", json_integer(10));
    return o;
  }
  if (strcmp(fragment, "c8y_CommunicationMode") == 0)
    return obj("mode", jstr("SMS"), 0, 0, 0, 0);
  if (strcmp(fragment, "c8y_RemoteAccessConnect") == 0)
    return obj("hostname", jstr("127.0.0.1"), "port", json_integer(22),
               "connectionKey", jstr("c8y-plugin-check-key"));
  if (strcmp(fragment, "c8y_DeviceProfile") == 0) {
    json_t *fw = obj("name", jstr("c8y-plugin-check"), "version", jstr("1.0"),
                     "url", jstr(h->url));
    json_object_set_new(fw, "isPatch", json_false());
    json_t *sw = json_array();
    json_array_append_new(sw, software_item(h, false));
    json_t *conf = json_array();
    json_array_append_new(conf,
                          obj("url", jstr(h->url), "type", jstr(ctype), 0, 0));
    return obj("firmware", fw, "software", sw, "configuration", conf);
  }
  if (strcmp(fragment, "c8y_ParameterUpdate") == 0)
    return obj("c8y_PluginCheck",
               obj("value", jstr("c8y-plugin-check"), 0, 0, 0, 0), 0, 0, 0, 0);
  return NULL;
}

/* Every scalar of the value swapped for one of another type. */
static json_t *wrong_types(json_t *v) {
  if (json_is_object(v)) {
    json_t *o = json_object();
    const char *k;
    json_t *x;
    json_object_foreach(v, k, x) json_object_set_new(o, k, wrong_types(x));
    return o;
  }
  if (json_is_array(v)) {
    json_t *a = json_array();
    size_t i;
    json_t *x;
    json_array_foreach(v, i, x) json_array_append_new(a, wrong_types(x));
    return a;
  }
  if (json_is_string(v))
    return json_integer(42);
  return jstr("c8y-plugin-check");
}

/* Every string of the value replaced by s. */
static json_t *strings_as(json_t *v, const char *s) {
  if (json_is_object(v)) {
    json_t *o = json_object();
    const char *k;
    json_t *x;
    json_object_foreach(v, k, x) json_object_set_new(o, k, strings_as(x, s));
    return o;
  }
  if (json_is_array(v)) {
    json_t *a = json_array();
    size_t i;
    json_t *x;
    json_array_foreach(v, i, x) json_array_append_new(a, strings_as(x, s));
    return a;
  }
  return json_is_string(v) ? jstr(s) : json_deep_copy(v);
}

/* The document as Cumulocity publishes it on devicecontrol/notifications
 * (its "JSON via MQTT" page): the operation with its id and status, and
 * externalSource naming the device. Takes value. */
static char *document(const char *fragment, json_t *value, const char *device,
                      const char *variant, unsigned id) {
  char ids[16], desc[200];
  snprintf(ids, sizeof ids, "%u", id);
  snprintf(desc, sizeof desc, "c8y-plugin-check: %s", variant);
  json_t *doc =
      obj("id", jstr(ids), "status", jstr("PENDING"), "deviceId", jstr("4711"));
  json_object_set_new(
      doc, "externalSource",
      obj("externalId", jstr(device), "type", jstr("c8y_Serial"), 0, 0));
  json_object_set_new(doc, "description", jstr(desc));
  json_object_set_new(doc, fragment, value);
  char *s = json_dumps(doc, JSON_COMPACT);
  json_decref(doc);
  if (!s)
    abort();
  return s;
}

static void add_json_case(check_cases *out, check_channel ch, const char *what,
                          const char *fragment, json_t *value,
                          const char *device, const char *variant,
                          unsigned *next_id, const char *line) {
  char *v = json_dumps(value, JSON_COMPACT | JSON_ENCODE_ANY);
  check_case c = {.channel = ch,
                  .what = xstrdup(what),
                  .fragment = xstrdup(fragment),
                  .device = xstrdup(device),
                  .variant = xstrdup(variant),
                  .shown = shown_of(v ? v : ""),
                  .json =
                      document(fragment, value, device, variant, (*next_id)++),
                  .line = line ? xstrdup(line) : NULL};
  free(v);
  add_case(out, c);
}

bool check_gen_template(check_cases *out, const char *template_id,
                        const char *device, const check_hints *h,
                        unsigned *next_id) {
  const struct shape *s = NULL;
  for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
    if (strcmp(shapes[i].id, template_id) == 0)
      s = &shapes[i];
  const char *fragment = proto_fragment(template_id);
  if (!s || !fragment)
    return false;
  strv valid = {0}, kinds = {0};
  valid_fields(s->fields, h, &valid, &kinds);
  const char *tid = template_id;
  add_line_case(out, CHECK_LINE, tid, fragment, tid, device, "valid", valid.v,
                valid.n, NULL);
  /* Both copies of one operation, as the platform sends them. */
  json_t *value = fragment_value(fragment, h);
  if (value) {
    char *params = encode_fields(valid.v, valid.n);
    char *line = line_of(tid, device, params);
    add_json_case(out, CHECK_LINE_JSON, tid, fragment, value, device,
                  "valid, as a line and its JSON copy", next_id, line);
    free(line);
    free(params);
  }
  strv more = {0};
  for (size_t i = 0; i < valid.n; i++)
    strv_add(&more, valid.v[i]);
  strv_add(&more, "c8y-plugin-check-extra");
  add_line_case(out, CHECK_LINE, tid, fragment, tid, device,
                "one parameter too many", more.v, more.n, NULL);
  strv_free(&more);
  if (valid.n > 0) {
    add_line_case(out, CHECK_LINE, tid, fragment, tid, device, "no parameters",
                  NULL, 0, NULL);
    if (valid.n > 1)
      add_line_case(out, CHECK_LINE, tid, fragment, tid, device,
                    "last parameter missing", valid.v, valid.n - 1, NULL);
    /* The first parameter that is no marker takes the bad value. */
    size_t k = 0;
    while (k < kinds.n && kinds.v[k][0] == '$')
      k++;
    static const char *const bad_names[] = {"an over-long parameter",
                                            "quotes, a comma and a newline",
                                            "bytes that are not UTF-8"};
    for (size_t b = 0; b < 3 && k < valid.n; b++) {
      char *saved = valid.v[k];
      valid.v[k] = b == 0   ? long_field()
                   : b == 1 ? xstrdup(quoted_text)
                            : xstrdup(not_utf8);
      add_line_case(out, CHECK_LINE, tid, fragment, tid, device, bad_names[b],
                    valid.v, valid.n, NULL);
      free(valid.v[k]);
      valid.v[k] = saved;
    }
    strv empty = {0};
    for (size_t i = 0; i < valid.n; i++)
      strv_add(&empty, "");
    add_line_case(out, CHECK_LINE, tid, fragment, tid, device,
                  "every parameter empty", empty.v, empty.n, NULL);
    strv_free(&empty);
  }
  strv_free(&valid);
  strv_free(&kinds);
  return true;
}

void check_gen_fragment(check_cases *out, const char *fragment,
                        const char *device, const check_hints *h,
                        unsigned *next_id) {
  json_t *known = fragment_value(fragment, h);
  if (known) {
    add_json_case(out, CHECK_JSON, fragment, fragment, json_deep_copy(known),
                  device, "valid", next_id, NULL);
  } else {
    add_json_case(out, CHECK_JSON, fragment, fragment, json_object(), device,
                  "an empty object", next_id, NULL);
    known =
        obj("text", jstr("c8y-plugin-check"), "value", json_integer(1), 0, 0);
    add_json_case(out, CHECK_JSON, fragment, fragment, json_deep_copy(known),
                  device, "members the kit made up", next_id, NULL);
  }
  add_json_case(out, CHECK_JSON, fragment, fragment, wrong_types(known), device,
                "every value of the wrong type", next_id, NULL);
  char *lng = long_field();
  json_t *v = json_is_object(known) && json_object_size(known) > 0
                  ? strings_as(known, lng)
                  : obj("text", jstr(lng), 0, 0, 0, 0);
  add_json_case(out, CHECK_JSON, fragment, fragment, v, device,
                "over-long strings", next_id, NULL);
  free(lng);
  v = json_is_object(known) && json_object_size(known) > 0
          ? strings_as(known, quoted_text)
          : obj("text", jstr(quoted_text), 0, 0, 0, 0);
  add_json_case(out, CHECK_JSON, fragment, fragment, v, device,
                "quotes, a comma and a newline in strings", next_id, NULL);
  json_t *arr = json_array();
  json_array_append_new(arr, jstr(quoted_text));
  add_json_case(out, CHECK_JSON, fragment, fragment, arr, device,
                "an array instead of an object", next_id, NULL);
  json_decref(known);
  /* An operation without an id: its static template's line alone. */
  for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
    const char *f = proto_fragment(shapes[i].id);
    if (!f || strcmp(f, fragment) != 0)
      continue;
    strv valid = {0}, kinds = {0};
    valid_fields(shapes[i].fields, h, &valid, &kinds);
    char variant[80];
    snprintf(variant, sizeof variant, "valid, only its %s line (no id)",
             shapes[i].id);
    add_line_case(out, CHECK_LINE, fragment, fragment, shapes[i].id, device,
                  variant, valid.v, valid.n, NULL);
    strv_free(&valid);
    strv_free(&kinds);
    break;
  }
}

void check_gen_record(check_cases *out, const char *xid, const char *message_id,
                      const char *fragment, const char *device,
                      unsigned *next_id) {
  char what[512];
  snprintf(what, sizeof what, "%s/%s", xid, message_id);
  /* Both copies of one operation: the platform renders the record from the
   * operation and sends its document too. */
  const char *valid_name;
  char **valid = check_gen_message_fields(0, &valid_name);
  char *params = encode_fields(valid, 2);
  char *line = line_of(message_id, device, params);
  json_t *value = obj("text", jstr(valid[0]), "value", jstr(valid[1]), 0, 0);
  add_json_case(out, CHECK_RECORD, what, fragment, value, device,
                "valid, as a record and its JSON copy", next_id, line);
  out->v[out->n - 1].xid = xstrdup(xid);
  free(line);
  free(params);
  free(valid[0]);
  free(valid[1]);
  free(valid);
  for (size_t i = 0; i < check_gen_message_variants(); i++) {
    const char *variant;
    char **fields = check_gen_message_fields(i, &variant);
    size_t n = 0;
    while (fields[n])
      n++;
    add_line_case(out, CHECK_RECORD, what, fragment, message_id, device,
                  variant, fields, n, xid);
    for (size_t k = 0; k < n; k++)
      free(fields[k]);
    free(fields);
  }
}

char *check_gen_twin_line(const char *fragment, const char *device,
                          const check_hints *h) {
  for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
    const char *f = proto_fragment(shapes[i].id);
    if (!f || strcmp(f, fragment) != 0)
      continue;
    strv valid = {0}, kinds = {0};
    valid_fields(shapes[i].fields, h, &valid, &kinds);
    char *params = encode_fields(valid.v, valid.n);
    char *line = line_of(shapes[i].id, device, params);
    free(params);
    strv_free(&valid);
    strv_free(&kinds);
    return line;
  }
  return NULL;
}

char *check_gen_twin_document(const char *fragment, const char *device,
                              const check_hints *h, unsigned *next_id) {
  json_t *v = fragment_value(fragment, h);
  return document(fragment, v ? v : json_object(), device,
                  "the second copy of an operation", (*next_id)++);
}

char *check_gen_twin_template_line(const char *line) {
  smartrest_records rec;
  if (!line || smartrest_decode(line, strlen(line), &rec) != 0)
    return NULL;
  char *out = NULL;
  const smartrest_record *r = rec.count == 1 ? &rec.items[0] : NULL;
  const char *tid = r && r->nfields >= 2 ? r->fields[0] : NULL;
  const char *richer = proto_richer_twin(tid);
  const char *plain = proto_plain_twin(tid);
  const char *twin = richer ? richer : plain;
  if (twin) {
    char *const *f = r->fields + 2;
    size_t n = r->nfields - 2;
    /* Software items: 527/528 carry 4 fields each, 531/529 5 (the type
     * third); in a profile they sit between $SW and $CONF. */
    size_t from = 0, to = n;
    bool profile = strcmp(tid, "527") == 0 || strcmp(tid, "531") == 0;
    for (size_t i = 0; profile && i < n; i++) {
      if (strcmp(f[i], "$SW") == 0)
        from = i + 1;
      else if (strcmp(f[i], "$CONF") == 0)
        to = i;
    }
    size_t per = richer ? 4 : 5;
    strv t = {0};
    strv_add(&t, twin);
    strv_add(&t, r->fields[1]);
    for (size_t i = 0; i < n; i++) {
      bool item = i >= from && i < to;
      size_t k = item ? (i - from) % per : 0;
      if (item && richer && k == 2)
        strv_add(&t, "c8y-plugin-check"); /* the type, before the url */
      if (!(item && plain && k == 2))
        strv_add(&t, f[i]);
    }
    if (profile_twins(tid, f, n, twin, t.v + 2, t.n - 2))
      out = encode_fields(t.v, t.n);
    strv_free(&t);
  }
  smartrest_records_free(&rec);
  return out;
}

char *check_gen_settled_document(const char *device, unsigned *next_id) {
  char *doc = document("c8y_PluginCheck", json_object(), device,
                       "an operation finished elsewhere", (*next_id)++);
  json_t *j = json_loads(doc, 0, NULL);
  free(doc);
  json_object_set_new(j, "status", jstr("SUCCESSFUL"));
  char *s = json_dumps(j, JSON_COMPACT);
  json_decref(j);
  if (!s)
    abort();
  return s;
}

size_t check_gen_message_variants(void) { return 5; }

char **check_gen_message_fields(size_t i, const char **variant) {
  strv f = {0};
  switch (i) {
  case 0:
    *variant = "valid";
    strv_add(&f, "c8y-plugin-check");
    strv_add(&f, "1");
    break;
  case 1:
    *variant = "no fields";
    f.v = calloc(1, sizeof *f.v);
    if (!f.v)
      abort();
    break;
  case 2: {
    *variant = "an over-long field";
    char *l = long_field();
    strv_add(&f, l);
    free(l);
    break;
  }
  case 3:
    *variant = "quotes, a comma and a newline";
    strv_add(&f, quoted_text);
    break;
  default:
    *variant = "bytes that are not UTF-8";
    strv_add(&f, not_utf8);
    break;
  }
  return f.v;
}

void check_cases_free(check_cases *c) {
  for (size_t i = 0; i < c->n; i++) {
    free(c->v[i].what);
    free(c->v[i].fragment);
    free(c->v[i].device);
    free(c->v[i].variant);
    free(c->v[i].shown);
    free(c->v[i].line);
    free(c->v[i].json);
    free(c->v[i].xid);
  }
  free(c->v);
  c->v = NULL;
  c->n = 0;
}
