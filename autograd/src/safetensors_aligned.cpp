// save_aligned (see safetensors.h): safetensors whose tensors start at aligned file offsets, for
// files that are mapped and used in place.
#include <nlohmann/json.hpp>

#include <set>

#include "edgetune/autograd/safetensors.h"
#include "edgetune/core/file_io.h"

namespace edgetune::safetensors {

void save_aligned(const std::filesystem::path& path, const std::vector<RawTensor>& tensors,
                  const std::map<std::string, std::string>& metadata, std::size_t alignment) {
  const std::string label = path.string();
  auto fail = [&label](const std::string& what) -> void {
    throw SafetensorsError(label + ": cannot save: " + what);
  };
  if (alignment < 8 || alignment > 4096 || (alignment & (alignment - 1)) != 0) {
    fail("alignment " + std::to_string(alignment) + " is not a power of two in [8, 4096]");
  }
  auto round_up = [alignment](std::uint64_t n) { return (n + alignment - 1) / alignment * alignment; };

  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::set<std::string_view> names;
  std::uint64_t offset = 0;
  for (const RawTensor& t : tensors) {
    const std::string q = "tensor '" + t.name + "'";
    if (t.name == "__metadata__") fail("\"__metadata__\" cannot be a tensor name");
    if (!names.insert(t.name).second) fail(q + " is given twice");
    const std::size_t size = dtype_size(t.dtype);
    if (size == 0) fail(q + " has the unknown dtype '" + t.dtype + "'");
    std::uint64_t numel = 1;
    for (std::int64_t d : t.shape) {
      if (d < 0) fail(q + " has a negative dimension");
      numel *= static_cast<std::uint64_t>(d);
    }
    if (numel * size != t.bytes.size()) {
      fail(q + " holds " + std::to_string(t.bytes.size()) + " bytes, its shape and dtype need " +
           std::to_string(numel * size));
    }
    offset = round_up(offset);
    header[t.name] = {{"dtype", t.dtype}, {"shape", t.shape}, {"data_offsets", {offset, offset + t.bytes.size()}}};
    offset += t.bytes.size();
  }
  std::string text;
  try {
    text = header.dump();
  } catch (const nlohmann::json::exception&) {
    fail("a tensor name or metadata string is not valid UTF-8");
  }
  text.append(round_up(8 + text.size()) - 8 - text.size(), ' ');
  const std::uint64_t header_len = text.size();

  try {
    AtomicFile file(path);
    file.write(&header_len, 8);
    file.write(text);
    const std::vector<std::byte> zeros(alignment);
    std::uint64_t at = 0;
    for (const RawTensor& t : tensors) {
      const std::uint64_t start = round_up(at);
      file.write(zeros.data(), start - at);
      file.write(t.bytes.data(), t.bytes.size());
      at = start + t.bytes.size();
    }
    file.commit();
  } catch (const FileError& e) {
    throw SafetensorsError(e.what());
  }
}

}  // namespace edgetune::safetensors
