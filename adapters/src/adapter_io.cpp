// Adapter folders (see adapter_io.h).
#include "edgetune/adapters/adapter_io.h"

#include <fstream>
#include <stdexcept>

#include "edgetune/autograd/safetensors.h"
#include "edgetune/core/file_io.h"

namespace edgetune::adapters {

namespace fs = std::filesystem;


void save_adapter_folder(const fs::path& dir, const AdapterFolder& folder) {
  fs::create_directories(dir);
  safetensors::save(dir / "adapter_model.safetensors", folder.tensors, {{"format", "pt"}});
  write_file_atomic(dir / "adapter_config.json", folder.config.dump(2) + "\n");
}

bool is_adapter_folder(const fs::path& dir) {
  std::error_code ec;
  return fs::exists(dir / "adapter_config.json", ec);
}

AdapterFolder load_adapter_folder(const fs::path& dir) {
  AdapterFolder f;
  const fs::path cfg = dir / "adapter_config.json";
  std::ifstream in(cfg);
  if (!in) {
    throw std::runtime_error(cfg.string() + ": missing (expected an adapter folder with "
                                            "adapter_config.json and adapter_model.safetensors)");
  }
  try {
    f.config = nlohmann::json::parse(in);
  } catch (const nlohmann::json::parse_error& e) {
    throw std::runtime_error(cfg.string() + ": invalid JSON (" + e.what() + ")");
  }
  if (!f.config.is_object()) throw std::runtime_error(cfg.string() + ": expected a JSON object");
  fs::path weights = dir / "adapter_model.safetensors";
  std::error_code ec;
  if (!fs::exists(weights, ec)) {
    throw std::runtime_error(weights.string() + ": missing (adapter_model.bin is not read: "
                                                "save the adapter with safetensors)");
  }
  safetensors::Reader r(weights);
  for (const auto& info : r.tensors()) {
    f.tensors.emplace_back(info.name, r.load(info, DType::F32, MemCategory::Trainable));
  }
  return f;
}

}  // namespace edgetune::adapters
