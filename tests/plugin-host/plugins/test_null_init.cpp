// lyre_plugin_init returns NULL: the plugin cannot describe itself.
#include "lyre/plugin.hpp"

LYRE_PLUGIN_EXPORT const LyrePluginApi* lyre_plugin_init(const LyreHostApi*) { return nullptr; }
