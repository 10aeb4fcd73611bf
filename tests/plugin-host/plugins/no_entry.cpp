// A shared library named like a plugin that exports no lyre_plugin_init.
extern "C" __attribute__((visibility("default"))) int lyre_something_else() { return 7; }
