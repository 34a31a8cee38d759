// Federated averaging, secure aggregation and client-level DP: one round's protocol (federated.h).
#include "edgetune/engine/federated.h"

#include <sodium.h>

#include <algorithm>
#include <cmath>
#include <numbers>
#include <stdexcept>

#include "edgetune/data/batch.h"
#include "edgetune/data/labels.h"
#include "edgetune/data/shuffle.h"
#include "edgetune/engine/finetune.h"
#include "edgetune/engine/loader.h"
#include "edgetune/engine/session.h"

namespace edgetune::federated {

namespace fs = std::filesystem;

Adapter read_adapter(const fs::path& dir) {
  return Adapter{read_adapter_files(dir), data::LabelMap::load(dir / "labels.json").id2label()};
}

void write_adapter(const Adapter& adapter, const fs::path& dir) {
  write_adapter_files(dir, adapter.files);
  data::LabelMap(adapter.labels).save(dir / "labels.json");
}

std::size_t value_count(const Adapter& adapter) {
  std::size_t n = 0;
  for (const auto& [name, t] : adapter.files.tensors) n += static_cast<std::size_t>(t.numel());
  return n;
}

std::vector<float> values(const Adapter& adapter) {
  std::vector<float> v;
  v.reserve(value_count(adapter));
  for (const auto& [name, t] : adapter.files.tensors)
    v.insert(v.end(), t.data<float>(), t.data<float>() + t.numel());
  return v;
}

void set_values(Adapter& adapter, std::span<const float> v) {
  if (v.size() != value_count(adapter)) {
    throw std::invalid_argument("federated: " + std::to_string(v.size()) +
                                " values for an adapter of " +
                                std::to_string(value_count(adapter)));
  }
  std::size_t at = 0;
  for (auto& [name, t] : adapter.files.tensors) {
    std::copy_n(v.data() + at, t.numel(), t.data<float>());
    at += static_cast<std::size_t>(t.numel());
  }
}

void write_initial_adapter(const TrainConfig& config, const std::vector<std::string>& labels,
                           const fs::path& out) {
  if (config.method.method == Method::Full) {
    throw std::invalid_argument(
        "federated averaging runs over adapters: --method full is not supported");
  }
  // As the trainer builds a fresh model: the method's seed is the run's.
  MethodOptions method = config.method;
  method.seed = config.seed;
  LoadOptions lo = load_options_for(method, config.quant, config.quant_embeddings);
  lo.id2label = labels;
  lo.seed = config.seed;
  BertModel model = load_bert(config.model_dir, lo);
  attach_adapters(model, method);
  save_trained(model, method, out, config.model_dir);
}

ClientUpdate client_round(const TrainConfig& config, std::ostream* log) {
  const std::vector<float> global = values(read_adapter(config.init_adapter));
  const TrainResult r = Trainer(config, log).run();
  if (r.interrupted) throw std::runtime_error("the client's training was interrupted");
  ClientUpdate u;
  u.delta = values(read_adapter(config.out));
  if (u.delta.size() != global.size()) {
    throw std::runtime_error(config.out.string() + ": the trained adapter has " +
                             std::to_string(u.delta.size()) + " values, the global one " +
                             std::to_string(global.size()));
  }
  for (std::size_t i = 0; i < global.size(); ++i) u.delta[i] -= global[i];
  u.examples =
      static_cast<std::int64_t>(read_data(config.train_file, config.data, true).examples.size());
  return u;
}

double clip_to_norm(std::span<float> d, double clip) {
  if (!(clip > 0)) throw std::invalid_argument("federated: the clipping norm must be positive");
  double sq = 0;
  for (float x : d) sq += static_cast<double>(x) * x;
  const double norm = std::sqrt(sq);
  if (norm > clip) {
    const double s = clip / norm;
    for (float& x : d) x = static_cast<float>(x * s);
  }
  return norm;
}

double fixed_point_sum_error(int clients) {
  return clients * std::ldexp(1.0, -kFixedPointBits - 1);
}

namespace {

void init_sodium() {
  if (sodium_init() < 0) throw std::runtime_error("libsodium could not be initialised");
}

}  // namespace

KeyPair make_key_pair() {
  init_sodium();
  KeyPair k;
  crypto_kx_keypair(k.public_key.data(), k.secret_key.data());
  return k;
}

std::vector<std::uint64_t> masked_upload(std::span<const float> u, int self, const KeyPair& keys,
                                         const std::vector<PublicKey>& publics,
                                         std::uint64_t round) {
  static_assert(crypto_kx_SESSIONKEYBYTES == crypto_stream_xchacha20_KEYBYTES);
  const int clients = static_cast<int>(publics.size());
  if (self < 0 || self >= clients || clients > kMaxSecureClients) {
    throw std::invalid_argument("secure aggregation: client " + std::to_string(self) + " of " +
                                std::to_string(clients) + " (at most " +
                                std::to_string(kMaxSecureClients) + ")");
  }
  init_sodium();
  const double scale = std::ldexp(1.0, kFixedPointBits);
  const double limit = std::ldexp(1.0, 32);
  std::vector<std::uint64_t> out(u.size());
  for (std::size_t k = 0; k < u.size(); ++k) {
    if (!(std::fabs(u[k]) < limit)) {
      throw std::range_error("secure aggregation: value " + std::to_string(u[k]) + " at " +
                             std::to_string(k) + " is outside the fixed-point range (|x| < 2^32)");
    }
    out[k] = static_cast<std::uint64_t>(std::llround(static_cast<double>(u[k]) * scale));
  }
  std::array<unsigned char, crypto_stream_xchacha20_NONCEBYTES> nonce{};
  for (int b = 0; b < 8; ++b)
    nonce[static_cast<std::size_t>(b)] = static_cast<unsigned char>(round >> (8 * b));
  std::vector<unsigned char> stream(u.size() * 8);
  std::array<unsigned char, crypto_kx_SESSIONKEYBYTES> rx{}, tx{};
  for (int j = 0; j < clients; ++j) {
    if (j == self) continue;
    // The lower id plays crypto_kx's client, the higher its server: the client's tx is the
    // server's rx, the pair's one key.
    const int rc = self < j
                       ? crypto_kx_client_session_keys(rx.data(), tx.data(), keys.public_key.data(),
                                                       keys.secret_key.data(),
                                                       publics[static_cast<std::size_t>(j)].data())
                       : crypto_kx_server_session_keys(rx.data(), tx.data(), keys.public_key.data(),
                                                       keys.secret_key.data(),
                                                       publics[static_cast<std::size_t>(j)].data());
    if (rc != 0)
      throw std::runtime_error("secure aggregation: client " + std::to_string(j) +
                               "'s public key is unusable");
    crypto_stream_xchacha20(stream.data(), stream.size(), nonce.data(),
                            self < j ? tx.data() : rx.data());
    for (std::size_t k = 0; k < u.size(); ++k) {
      std::uint64_t m = 0;
      for (int b = 0; b < 8; ++b)
        m |= static_cast<std::uint64_t>(stream[8 * k + static_cast<std::size_t>(b)]) << (8 * b);
      out[k] = self < j ? out[k] + m : out[k] - m;
    }
  }
  sodium_memzero(rx.data(), rx.size());
  sodium_memzero(tx.data(), tx.size());
  sodium_memzero(stream.data(), stream.size());
  return out;
}

std::vector<double> unmask_sum(const std::vector<std::vector<std::uint64_t>>& uploads) {
  if (uploads.empty()) throw std::invalid_argument("secure aggregation: no uploads to sum");
  std::vector<std::uint64_t> sum(uploads.front().size(), 0);
  for (const auto& m : uploads) {
    if (m.size() != sum.size())
      throw std::invalid_argument("secure aggregation: uploads of different sizes");
    for (std::size_t k = 0; k < sum.size(); ++k) sum[k] += m[k];
  }
  std::vector<double> out(sum.size());
  for (std::size_t k = 0; k < sum.size(); ++k) {
    out[k] = std::ldexp(static_cast<double>(static_cast<std::int64_t>(sum[k])), -kFixedPointBits);
  }
  return out;
}

void accumulate(std::span<double> sum, std::span<const float> u, double w) {
  if (sum.size() != u.size())
    throw std::invalid_argument("federated: an update of another size than the sum");
  for (std::size_t k = 0; k < sum.size(); ++k) sum[k] += w * static_cast<double>(u[k]);
}

void add_gaussian_noise(std::span<double> sum, double noise_multiplier, double clip,
                        std::uint64_t seed) {
  data::Rng rng(seed);
  const double sd = noise_multiplier * clip;
  for (double& s : sum) {
    const double u1 = 1.0 - rng.uniform();  // (0, 1]: log is finite
    const double u2 = rng.uniform();
    s += sd * std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * std::numbers::pi * u2);
  }
}

void apply_average(std::span<float> global, std::span<const double> sum, double total_weight) {
  if (global.size() != sum.size())
    throw std::invalid_argument("federated: a sum of another size than the adapter");
  if (!(total_weight > 0))
    throw std::invalid_argument("federated: the round's total weight must be positive");
  for (std::size_t k = 0; k < global.size(); ++k) {
    global[k] = static_cast<float>(static_cast<double>(global[k]) + sum[k] / total_weight);
  }
}

ServerOptimizer::ServerOptimizer(double lr, double momentum) : lr_(lr), momentum_(momentum) {
  if (!(lr > 0)) throw std::invalid_argument("federated: the server learning rate must be positive");
  if (!(momentum >= 0 && momentum < 1)) {
    throw std::invalid_argument("federated: the server momentum must be in [0, 1)");
  }
}

void ServerOptimizer::step(std::span<float> global, std::span<const double> sum,
                           double total_weight) {
  if (global.size() != sum.size())
    throw std::invalid_argument("federated: a sum of another size than the adapter");
  if (!(total_weight > 0))
    throw std::invalid_argument("federated: the round's total weight must be positive");
  if (velocity_.empty()) velocity_.assign(sum.size(), 0.0);
  if (velocity_.size() != sum.size())
    throw std::invalid_argument("federated: a sum of another size than the server's momentum");
  for (std::size_t k = 0; k < global.size(); ++k) {
    velocity_[k] = momentum_ * velocity_[k] + sum[k] / total_weight;
    global[k] = static_cast<float>(static_cast<double>(global[k]) + lr_ * velocity_[k]);
  }
}

EvalReport evaluate_adapter(const TrainConfig& config, const fs::path& adapter_dir) {
  Model m = open_model(config.model_dir, adapter_dir, config.quant, config.quant_embeddings);
  const data::LabelMap map = eval_label_map(m.labels());
  const data::Dataset ds = read_data(config.eval_file, config.data, true, &map);
  // As in training, the default length gives way to a model with fewer positions.
  const int length = static_cast<int>(
      std::min<std::int64_t>(config.data.max_length, m.bert.config.max_position_embeddings));
  const auto enc = data::encode_dataset(m.tokenizer, ds, length);
  return evaluate(m.bert, enc, data::label_ids(ds), m.tokenizer.pad_id(), config.eval_batch_size,
                  config.compute);
}

Traffic round_traffic(std::size_t values, int clients, int uploads, int failed_plain, bool secure) {
  const auto p = static_cast<std::uint64_t>(values);
  Traffic t;
  t.down = static_cast<std::uint64_t>(clients) * (kDownHeaderBytes + 4 * p);
  t.up =
      static_cast<std::uint64_t>(uploads - failed_plain) * (kUpHeaderBytes + (secure ? 8 : 4) * p) +
      static_cast<std::uint64_t>(failed_plain) * kUpHeaderBytes;
  return t;
}

}  // namespace edgetune::federated
