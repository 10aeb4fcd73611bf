// A checkpointer ("checkpointer-test-lying") whose list() answers whatever its config's "list"
// key holds, dumped as JSON: the host must refuse a malformed answer, naming the plugin and the
// text, never convert it blindly. save/load refuse; it keeps nothing.
#include <nlohmann/json.hpp>

#include <string>

#include "lyre/plugin.hpp"

struct LyreCheckpointer {
  std::string list_json;
};

namespace {

using lyre::plugin::Error;
using lyre::plugin::guard;

LyreError* create(LyreCheckpointer_Create_Args* args) {
  return guard([&] {
    const nlohmann::json config = nlohmann::json::parse(args->config_json);
    args->checkpointer = new LyreCheckpointer{config.at("list").dump()};
  });
}

LyreError* destroy(LyreCheckpointer_Destroy_Args* args) {
  delete args->checkpointer;
  return nullptr;
}

LyreError* refuse_save(LyreCheckpointer_Save_Args*) {
  return guard([] { throw Error(LYRE_ERROR_UNIMPLEMENTED, "this checkpointer only lists"); });
}

LyreError* wait(LyreCheckpointer_Wait_Args*) { return nullptr; }

LyreError* list(LyreCheckpointer_List_Args* args) {
  args->json = args->checkpointer->list_json.c_str();
  return nullptr;
}

LyreError* refuse_load(LyreCheckpointer_Load_Args*) {
  return guard([] { throw Error(LYRE_ERROR_UNIMPLEMENTED, "this checkpointer only lists"); });
}

const LyreCheckpointerApi checkpointer = {
    sizeof(LyreCheckpointerApi), create, destroy, refuse_save, wait, list, refuse_load,
};

const LyrePluginApi api = {
    sizeof(LyrePluginApi), LYRE_ABI_MAJOR, LYRE_ABI_MINOR, "checkpointer-test-lying", "0.0.1",
    "lists what its config says", LYRE_SLOT_CHECKPOINTER,
    nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, &checkpointer,
};

}  // namespace

LYRE_PLUGIN_ENTRY(api)
