/* check_gen: what c8y-plugin-check sends a plugin, playing the platform.
 *
 * For a static template (510-532) the parameters come from the template's
 * shape in Cumulocity's static template table (shared c8y-protocol.md,
 * section 3): valid ones first, then malformed ones (no parameters, one
 * missing, one too many, an over-long field, quotes/commas/newlines, bytes
 * that are not UTF-8, every field empty), and the valid line together with
 * its JSON copy (the platform sends both, the agent runs it once). For a
 * fragment the document Cumulocity puts on devicecontrol/notifications,
 * with the fragment's usual value from the device-management library when
 * the kit knows it, and malformed values (a string instead of an object,
 * every value of the wrong type, an empty object, an over-long string);
 * when the fragment also has a static template, its line alone (an
 * operation without an id or JSON, as a SmartREST-only platform sends it).
 * For a custom template operation its record on s/dc/<xid>.
 *
 * Values are harmless on purpose (the shell command is an echo, hosts are
 * loopback, URLs are the kit's own), since a plugin runs what it gets. */
#ifndef C8Y_CHECK_GEN_H
#define C8Y_CHECK_GEN_H

#include <stdbool.h>
#include <stddef.h>

/* Where an operation arrives. */
typedef enum check_channel {
  CHECK_LINE,      /* an s/ds line, no id */
  CHECK_JSON,      /* a devicecontrol/notifications document with an id */
  CHECK_LINE_JSON, /* both copies of one operation */
  CHECK_RECORD     /* a custom template record on s/dc/<xid> (and its JSON
                      copy when json is set) */
} check_channel;

typedef struct check_case {
  check_channel channel;
  char *what;     /* the template id, the fragment or "<xid>/<message id>" */
  char *fragment; /* the operation's fragment */
  char *device;   /* the device's external id */
  char *variant;  /* "valid", "one field missing", ... */
  char *shown;    /* the parameters as the report shows them (cut) */
  char *line;     /* CHECK_LINE*, CHECK_RECORD: the SmartREST record */
  char *json;     /* CHECK_JSON, CHECK_LINE_JSON (CHECK_RECORD): the document */
  char *xid;      /* CHECK_RECORD: its collection */
} check_case;

typedef struct check_cases {
  check_case *v;
  size_t n;
} check_cases;

/* What the plugin announced that valid parameters should use: the first
 * configuration type of its 119 and log type of its 118 (NULL = none), and
 * the URL the kit serves a file at. */
typedef struct check_hints {
  const char *config_type;
  const char *log_type;
  const char *url;
} check_hints;

/* Longest field the kit sends: leaves room for the rest of the line
 * within Cumulocity's 16000-byte payload. */
#define CHECK_LONG_FIELD 15000

/* Appends the cases of a static template for a device. False if the id is
 * no operation template. */
bool check_gen_template(check_cases *out, const char *template_id,
                        const char *device, const check_hints *h,
                        unsigned *next_id);
/* Appends the cases of a fragment handler for a device. */
void check_gen_fragment(check_cases *out, const char *fragment,
                        const char *device, const check_hints *h,
                        unsigned *next_id);
/* Appends the cases of a custom template operation of `fragment` for a
 * device: its records, and a valid one with its JSON copy. */
void check_gen_record(check_cases *out, const char *xid, const char *message_id,
                      const char *fragment, const char *device,
                      unsigned *next_id);
void check_cases_free(check_cases *c);

/* The late second copy of an operation that arrived on one channel only,
 * as the platform sends every operation of a fragment with a SmartREST
 * template on both: a valid line of the fragment's static template
 * (check_gen_twin_line; NULL if it has none) or its document with a new
 * id. The agent drops it as the ended operation's twin. */
char *check_gen_twin_line(const char *fragment, const char *device,
                          const check_hints *h);
char *check_gen_twin_document(const char *fragment, const char *device,
                              const check_hints *h, unsigned *next_id);
/* The platform sends an operation of 527/531 (device profile) or 528/529
 * (software update) as both templates; the agent runs it once and drops
 * the other line as its twin. For a line of one of them: the other
 * template's line of the same operation (software items with the type
 * added or dropped), or NULL when its fields make no such pair. */
char *check_gen_twin_template_line(const char *line);

/* A document that starts nothing (its status is SUCCESSFUL): what the
 * platform's JSON channel delivers for an operation another agent run
 * finished. */
char *check_gen_settled_document(const char *device, unsigned *next_id);

/* A custom record of fields for a message handler: valid, none, long,
 * quoted. Returns how many variants there are; variant i's fields (a
 * NULL-terminated malloc'ed array of malloc'ed strings) and its name. */
size_t check_gen_message_variants(void);
char **check_gen_message_fields(size_t i, const char **variant);

#endif
