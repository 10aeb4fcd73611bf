#include "data/record.hpp"

namespace lyre {

const char* record_kind_name(RecordKind kind) {
  switch (kind) {
    case RecordKind::text: return "text";
    case RecordKind::prompt_completion: return "prompt_completion";
    case RecordKind::messages: return "messages";
    case RecordKind::preference: return "preference";
  }
  return "unknown";
}

}  // namespace lyre
