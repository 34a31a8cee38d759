// Federated averaging of adapters (FedAvg, McMahan et al. 2017), its secure aggregation (pairwise
// additive masks, Bonawitz et al. 2017, without dropout recovery) and client-level differential
// privacy (DP-FedAvg, McMahan et al. 2018): the protocol of one round, free of any transport.
//
// What this is: what a client does in a round (fine-tune the global adapter for S steps on its
// shard through the trainer, under its own memory budget, and return the delta and its example
// count), how it clips and masks that delta, and what the server does with the uploads (the
// weighted mean in double, the DP noise, the new global adapter, its evaluation), with the bytes
// each message takes. What it is not: the transport. `edgetune federated` (examples/cli) carries
// these messages over MPI; any other carrier can.
//
// A round r, with clients i = 0..K-1 and P the number of adapter values (every trainable tensor
// of the adapter folder, flattened in the file's order):
//   server -> every client: the global adapter g (P float32)
//   client i: trains from g, delta d_i = local - g (P), weight w_i = its example count n_i
//             (with DP: d_i clipped to L2 norm C, w_i = 1)
//   client i -> server: w_i and u_i = w_i d_i (plain: P float32; secure: P uint64, masked)
//   server: g += (sum_i u_i + noise) / sum_i w_i, noise = N(0, sigma^2 C^2) per coordinate with DP,
//           0 without (FedAvg; with a server learning rate or momentum, ServerOptimizer's step
//           over that mean).
//
// Secure aggregation. Every client makes an X25519 key pair (libsodium crypto_kx) and the
// server relays the public keys. Clients i < j share a 32-byte key k_ij (crypto_kx session key:
// i's tx, which is j's rx); the mask of pair (i, j) in round r is the XChaCha20 keystream of k_ij
// with nonce r, read as P little-endian uint64. Client i uploads
//   m_i = encode(u_i) + sum_{j > i} mask_ij - sum_{j < i} mask_ji   (mod 2^64),
// encode(x) = round(x * 2^kFixedPointBits) as a two's-complement uint64. The masks cancel in
// sum_i m_i, so the server decodes sum_i encode(u_i) and learns nothing of a single u_i beyond
// the sum (against a server that follows the protocol: the keys are not authenticated). Every
// client must upload in every round, or the sum stays masked: a client whose training failed
// uploads encode(0) with its masks and weight 0. A client that does not upload at all makes
// the round's sum unusable (no dropout recovery).
#pragma once

#include <array>
#include <cstdint>
#include <filesystem>
#include <ostream>
#include <span>
#include <string>
#include <vector>

#include "edgetune/engine/adapter_folder.h"
#include "edgetune/engine/metrics.h"
#include "edgetune/engine/trainer.h"

namespace edgetune::federated {

// An adapter folder as the round passes it around: its two files and its class names.
struct Adapter {
  AdapterFiles files;
  std::vector<std::string> labels;  // labels.json, id order
};

// Reads dir (adapter_config.json, adapter_model.safetensors, labels.json). Throws as
// read_adapter_files, and data::DataError when labels.json is missing or malformed.
Adapter read_adapter(const std::filesystem::path& dir);
// Writes the three files into dir, each atomically.
void write_adapter(const Adapter& adapter, const std::filesystem::path& dir);

// P: the number of values of the adapter's tensors.
std::size_t value_count(const Adapter& adapter);
// The values of the adapter's tensors, flattened in the file's order: (P).
std::vector<float> values(const Adapter& adapter);
// Overwrites the adapter's tensors with `v` (P). Requires v.size() == value_count(adapter)
// (std::invalid_argument otherwise).
void set_values(Adapter& adapter, std::span<const float> v);

// The global adapter of round 1: `config`'s method attached to the base config.model_dir
// (quant, seed), a fresh classifier head for `labels` (unless the base has exactly these), written
// to `out`. Every client starts from these same values.
void write_initial_adapter(const TrainConfig& config, const std::vector<std::string>& labels,
                           const std::filesystem::path& out);

// What a client sends back from a round.
struct ClientUpdate {
  std::vector<float> delta;   // (P) local adapter - global adapter
  std::int64_t examples = 0;  // rows of its shard it trained on
};

// A client's round: config.init_adapter is the global adapter's folder, config.train_file the
// shard, config.out a folder of the client's own (the trainer's run folder, rewritten each
// round), config.max_steps the local steps S, config.memory_budget its budget. Runs the trainer
// (run.h) there and returns the trained adapter minus the global one. Throws what the trainer
// throws (BudgetExceeded, PlanError, data::DataError, ...); nothing is sent then.
ClientUpdate client_round(const TrainConfig& config, std::ostream* log = nullptr);

// Scales d (P) to L2 norm `clip` when its norm (summed in double) is larger; returns the norm
// before clipping. Requires clip > 0 (std::invalid_argument).
double clip_to_norm(std::span<float> d, double clip);

// ---- secure aggregation -------------------------------------------------------------------------

// Fixed point of the masked uploads: x is sent as round(x * 2^24), a step of 2^-24 (6.0e-8).
// encode() refuses |x| >= 2^32, and at most kMaxSecureClients uploads are summed, so the sum,
// below 2^32 * 2^7 * 2^24 = 2^63 in magnitude, decodes exactly as a signed 64-bit integer.
inline constexpr int kFixedPointBits = 24;
inline constexpr int kMaxSecureClients = 128;
// Rounding error of the decoded sum of K uploads, per coordinate: each encode rounds to nearest,
// so the sum is within K * 2^-25 of the exact sum of the u_i.
double fixed_point_sum_error(int clients);

using PublicKey = std::array<std::uint8_t, 32>;
struct KeyPair {
  PublicKey public_key;
  std::array<std::uint8_t, 32> secret_key;
};
// A fresh X25519 key pair (crypto_kx_keypair). Throws std::runtime_error when libsodium cannot
// initialise.
KeyPair make_key_pair();

// Client `self`'s masked upload of u (P) in round `round`: encode(u) + the masks of every other
// client j (see the file comment), from `keys` (self's pair) and `publics` (every client's public
// key, indexed by client; publics[self] is self's). Requires 0 <= self < publics.size() <=
// kMaxSecureClients and |u| < 2^32 elementwise (std::invalid_argument, std::range_error); throws
// std::runtime_error when a public key is unusable for the key exchange.
std::vector<std::uint64_t> masked_upload(std::span<const float> u, int self, const KeyPair& keys,
                                         const std::vector<PublicKey>& publics,
                                         std::uint64_t round);

// The server's sum of masked uploads: sum (mod 2^64) of each coordinate, decoded as the signed
// fixed-point value: (P) doubles. Requires at least one upload, each of the same size.
std::vector<double> unmask_sum(const std::vector<std::vector<std::uint64_t>>& uploads);

// ---- the server ---------------------------------------------------------------------------------

// Adds w * u to sum (both P), in double. Requires equal sizes (std::invalid_argument).
void accumulate(std::span<double> sum, std::span<const float> u, double w);

// Gaussian noise of DP-FedAvg: adds N(0, (noise_multiplier * clip)^2) to every coordinate of sum,
// drawn by Box-Muller from data::Rng(seed) (the seed should differ from round to round).
void add_gaussian_noise(std::span<double> sum, double noise_multiplier, double clip,
                        std::uint64_t seed);

// The FedAvg step: g += sum / total_weight per coordinate (in double, stored float32).
// Requires equal sizes and total_weight > 0 (std::invalid_argument).
void apply_average(std::span<float> global, std::span<const double> sum, double total_weight);

// The server's optimizer over the round's mean delta (FedAvgM, Hsu et al. 2019: the mean delta is
// a pseudo-gradient, Reddi et al. 2021), for fleets whose clients' data differ so much that plain
// FedAvg's mean of their drifting deltas stalls:
//   v = momentum * v + sum / total_weight;   g += lr * v   (in double, g stored float32).
// v starts at zero. lr 1 and momentum 0 give apply_average's g exactly. Requires lr > 0,
// momentum in [0, 1) (std::invalid_argument), and step's arguments as apply_average's.
class ServerOptimizer {
 public:
  ServerOptimizer(double lr, double momentum);
  void step(std::span<float> global, std::span<const double> sum, double total_weight);
  // v after the last step (empty before the first).
  const std::vector<double>& velocity() const { return velocity_; }

 private:
  double lr_, momentum_;
  std::vector<double> velocity_;
};

// Accuracy (and the rest of EvalReport) of the adapter in adapter_dir over the base
// config.model_dir (config.quant, quant_embeddings, compute, data options, eval_batch_size) on the
// labelled file config.eval_file.
EvalReport evaluate_adapter(const TrainConfig& config, const std::filesystem::path& adapter_dir);

// ---- traffic ------------------------------------------------------------------------------------

// Bytes of one round's messages, as `edgetune federated` sends them: the global adapter to each
// of `clients` (8-byte round header + P float32), and each of `uploads` uploads (16-byte header:
// status and weight, + P float32, or P uint64 when secure; a failed plain client sends the header
// only, which `failed_plain` counts among the uploads).
struct Traffic {
  std::uint64_t down = 0;
  std::uint64_t up = 0;
  std::uint64_t total() const { return down + up; }
};
inline constexpr std::uint64_t kDownHeaderBytes = 8;
inline constexpr std::uint64_t kUpHeaderBytes = 16;
Traffic round_traffic(std::size_t values, int clients, int uploads, int failed_plain, bool secure);

}  // namespace edgetune::federated
