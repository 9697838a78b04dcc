#include "proto.h"

#include <stdlib.h>
#include <string.h>

static const struct op_template {
  const char *id;
  const char *fragment;
  const char *richer_twin;
} op_templates[] = {
    {"510", "c8y_Restart", NULL},
    {"511", "c8y_Command", NULL},
    {"513", "c8y_Configuration", NULL},
    {"515", "c8y_Firmware", NULL},
    {"516", "c8y_SoftwareList", NULL},
    {"517", "c8y_MeasurementRequestOperation", NULL},
    {"518", "c8y_Relay", NULL},
    {"519", "c8y_RelayArray", NULL},
    {"520", "c8y_UploadConfigFile", NULL},
    {"521", "c8y_DownloadConfigFile", NULL},
    {"522", "c8y_LogfileRequest", NULL},
    {"523", "c8y_CommunicationMode", NULL},
    {"524", "c8y_DownloadConfigFile", NULL},
    {"525", "c8y_Firmware", NULL},
    {"526", "c8y_UploadConfigFile", NULL},
    {"527", "c8y_DeviceProfile", "531"},
    {"528", "c8y_SoftwareUpdate", "529"},
    {"529", "c8y_SoftwareUpdate", NULL},
    {"530", "c8y_RemoteAccessConnect", NULL},
    {"531", "c8y_DeviceProfile", NULL},
    {"532", "c8y_ParameterUpdate", NULL},
};

static const struct op_template *find_op(const char *id) {
  if (!id)
    return NULL;
  for (size_t i = 0; i < sizeof op_templates / sizeof op_templates[0]; i++)
    if (strcmp(op_templates[i].id, id) == 0)
      return &op_templates[i];
  return NULL;
}

const char *proto_fragment(const char *template_id) {
  const struct op_template *t = find_op(template_id);
  return t ? t->fragment : NULL;
}

bool proto_fragment_has_template(const char *fragment) {
  for (size_t i = 0;
       fragment && i < sizeof op_templates / sizeof op_templates[0]; i++)
    if (strcmp(op_templates[i].fragment, fragment) == 0)
      return true;
  return false;
}

const char *proto_richer_twin(const char *template_id) {
  const struct op_template *t = find_op(template_id);
  return t ? t->richer_twin : NULL;
}

const char *proto_plain_twin(const char *template_id) {
  for (size_t i = 0;
       template_id && i < sizeof op_templates / sizeof op_templates[0]; i++)
    if (op_templates[i].richer_twin &&
        strcmp(op_templates[i].richer_twin, template_id) == 0)
      return op_templates[i].id;
  return NULL;
}

/* A static template id is three digits; anything else is not one. */
static int numeric_id(const char *id) {
  if (!id || strlen(id) != 3)
    return -1;
  for (int i = 0; i < 3; i++)
    if (id[i] < '0' || id[i] > '9')
      return -1;
  return atoi(id);
}

outq_class proto_class(const char *template_id) {
  int id = numeric_id(template_id);
  if (id >= 100 && id < 200)
    return OUTQ_INVENTORY;
  if (id >= 200 && id < 300)
    return OUTQ_MEASUREMENT;
  if (id >= 300 && id < 400)
    return OUTQ_ALARM;
  if (id >= 500 && id < 600)
    return OUTQ_OPSTATUS;
  return OUTQ_EVENT;
}

uint8_t proto_replace_key(const char *template_id) {
  int id = numeric_id(template_id);
  if ((id >= 110 && id <= 119) || id == 121 || id == 122 || id == 143 ||
      id == 150)
    return (uint8_t)id;
  if (id >= 140 && id <= 142)
    return 140;
  return 0;
}

unsigned proto_replace_flags(const char *template_id) {
  int id = numeric_id(template_id);
  if (id == 140)
    return OUTQ_LIST_HEAD;
  if (id == 141 || id == 142)
    return OUTQ_LIST_CHUNK;
  return 0;
}

bool proto_agent_owned(const char *template_id) {
  int id = numeric_id(template_id);
  return (id >= 500 && id < 600) || id == 114;
}
