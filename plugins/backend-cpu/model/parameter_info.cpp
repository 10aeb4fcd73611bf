#include "model/parameter_info.hpp"

#include <utility>

namespace lyre::cpu {

size_t append_parameter(std::vector<ParameterInfo>& infos, std::string name, LyreParamKind kind,
                        std::vector<int64_t> shape) {
  ParameterInfo p;
  p.name = std::move(name);
  p.kind = kind;
  p.shape = std::move(shape);
  p.numel = 1;
  for (int64_t s : p.shape) p.numel *= static_cast<size_t>(s);
  p.offset = infos.empty() ? 0 : infos.back().offset + infos.back().numel;
  infos.push_back(std::move(p));
  return infos.size() - 1;
}

int64_t trainable_numel(const std::vector<ParameterInfo>& infos) {
  int64_t n = 0;
  for (const ParameterInfo& p : infos)
    if (p.trainable) n += static_cast<int64_t>(p.numel);
  return n;
}

}  // namespace lyre::cpu
