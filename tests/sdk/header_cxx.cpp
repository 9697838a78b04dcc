// <c8y/plugin.h> must compile as C++20 (-Wall -Wextra -Wpedantic -Werror)
// and C8Y_PLUGIN must give an unmangled c8y_plugin_info_v1 with external
// linkage (a namespace-scope const would otherwise be internal in C++).
#include <c8y/plugin.h>

#include <cstddef>

namespace {
const c8y_api *api;

int produce(c8y_plugin *, c8y_batch *out, void *) {
  return api->batch_add(out, "c8y_Test", "v", 1.0, "u");
}

int init(c8y_plugin *self, const c8y_api *a, void **) {
  api = a;
  if (!C8Y_API_HAS(api, state_dir))
    return C8Y_ENOTSUP;
  return api->add_producer(self, "p", 1000u, produce, nullptr);
}

void fini(c8y_plugin *self, void *) {
  api->log(self, C8Y_LOG_DEBUG, "bye %d", static_cast<int>(C8Y_OK));
}
} // namespace

static_assert(sizeof(c8y_plugin_info) >=
                  offsetof(c8y_plugin_info, fini) + sizeof(void (*)(void)),
              "descriptor layout");

C8Y_PLUGIN(.name = "header_cxx", .version = "1.0", .init = init, .fini = fini);
