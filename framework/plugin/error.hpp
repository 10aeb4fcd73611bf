// Host-side errors: the definition of the ABI's opaque LyreError, and the exception the host
// throws when a plugin call fails.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>

#include "lyre/abi.h"

// The ABI's opaque error, defined by the host that owns it.
struct LyreError {
  int32_t code;
  std::string message;
};

namespace lyre {

// A plugin call failed. what() reads "<context>: <plugin's message>".
class PluginError : public std::runtime_error {
 public:
  PluginError(int32_t code, const std::string& message) : std::runtime_error(message), code_(code) {}
  int32_t code() const { return code_; }

 private:
  int32_t code_;
};

// Frees `err` and throws PluginError("<context>: <message>") when err is not NULL.
void check(LyreError* err, const std::string& context);

// The services table every plugin receives at lyre_plugin_init (one rank, no MPI in v1).
const LyreHostApi* host_api();

}  // namespace lyre
