/* profile: Cumulocity device profiles (c8y_DeviceProfile) as the steps the
 * operation engine runs through the plugins that own them.
 *
 * Source: Cumulocity's fragment library, "Device profile" (c8y-docs
 * content/device-integration/fragment-library-bundle/device-profile.md):
 * a profile is a firmware update, a software update and typed
 * configuration files in one operation; "if present the firmware, software,
 * and configuration should be handled exactly like their individual
 * operations (c8y_Firmware, c8y_SoftwareUpdate, and typed
 * c8y_DownloadConfigFile)", firmware first, software second, configuration
 * third. It arrives as template 527 (and, when a software item has a type,
 * also as 531 "alongside", both "sent to devices simultaneously") and as
 * the JSON document
 *   {"profileName":..., "profileId":"158751", "c8y_DeviceProfile":
 *    {"firmware":{"name","version","url"},
 *     "software":[{"name","version","url","action","softwareType"}],
 *     "configuration":[{"name","type","url"}]}}
 * 527: $FW,name,version,url,isPatch,dependency,$SW,(name,version,url,
 *      action)...,$CONF,(url,type)...
 * 531: the same with (name,version,type,url,action) software items.
 *
 * A plan is the profile's steps, each an ordinary operation of its own
 * template with the parameters that template's SmartREST line would carry
 * (515 name,version,url; 525 name,version,url,dependency when isPatch;
 * 528/529 the software items; one 524 url,type per configuration file) and
 * the same data as that operation's JSON document, so template handlers
 * and fragment handlers both run it. Parts with nothing to do (no firmware
 * name, no software item, no file) are no step. */
#ifndef C8Y_PROFILE_H
#define C8Y_PROFILE_H

#include "registry.h"

#include <stdbool.h>
#include <stddef.h>

#define PROFILE_FRAGMENT "c8y_DeviceProfile"

typedef struct profile_step {
  const char *template_id; /* "515", "525", "528", "529" or "524" */
  const char *fragment;    /* "c8y_Firmware", "c8y_SoftwareUpdate", ... */
  char *label;             /* "firmware", "software", "configuration x" */
  char **fields;           /* the template's parameters after the device */
  size_t nfields;
  char *json; /* {"<fragment>": ...}: the step as a JSON operation */
} profile_step;

typedef struct profile_plan {
  char *profile_id; /* the JSON document's profileId, or NULL */
  profile_step *steps;
  size_t nsteps;
} profile_plan;

/* The plan of a profile operation: from its JSON document when it has one
 * with a c8y_DeviceProfile object (the richest copy: software types,
 * profileId), else from its 527/531 line's parameters (after the device
 * id). Returns C8Y_OK, C8Y_EINVAL with one line in err naming the bad
 * field, or C8Y_ENOMEM. *out is cleared first and freed on error. */
int profile_plan_new(const char *template_id, char *const *fields, size_t n,
                     const char *json, profile_plan *out, char *err,
                     size_t errlen);
void profile_plan_free(profile_plan *p);
/* The profileId of a JSON copy that arrived after the plan was made from
 * the SmartREST line (the steps stay as they are). */
void profile_plan_learn_id(profile_plan *p, const char *json);

/* Whether two static operation lines describe one operation sent twice:
 * 527 and 531 (or 528 and 529) whose parameters are equal once the typed
 * one's software types are dropped. */
bool profile_twins(const char *template_a, char *const *a, size_t na,
                   const char *template_b, char *const *b, size_t nb);

/* The handler that would run a step for the root device, or NULL. */
reg_handler *profile_step_handler(registry *r, const profile_step *s);
/* Whether the engine runs device profiles for the root: no plugin serves
 * c8y_DeviceProfile itself, and plugins serve all three parts a profile
 * may carry (c8y_Firmware 515, c8y_SoftwareUpdate 528 or 529, typed
 * c8y_DownloadConfigFile 524), so every profile the UI can compose runs. */
bool profile_supported(registry *r);
/* registry_supported_operations plus c8y_DeviceProfile when
 * profile_supported: the root's 114 (malloc'ed, NULL when out of
 * memory). */
char *profile_supported_operations(registry *r);

#endif
