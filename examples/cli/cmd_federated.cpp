// `edgetune federated`: federated averaging of an adapter over MPI, started as
//   mpirun -n K+1 edgetune federated --model M --shards DIR --eval FILE --rounds R --local-steps S
//   --out RUN_DIR
// Rank 0 is the server: it makes the initial adapter, sends the global adapter to every client
// each round, averages what comes back (engine/federated.h: FedAvg, optionally under secure
// aggregation and client-level DP), evaluates it on --eval, and writes RUN_DIR/metrics.jsonl (one
// line per round) and the adapter folder in RUN_DIR. Rank k = 1..K is client k-1: it trains on
// DIR/client-k.jsonl (as `edgetune split` writes them) in its own folder RUN_DIR/clients/client-k.
// Built only where CMake finds MPI.
//
// Messages, each an MPI_BYTE buffer (sizes: federated.h's round_traffic):
//   setup (broadcast once): adapter_config.json, labels.json and adapter_model.safetensors;
//     with --secure-aggregation each client's X25519 public key is gathered and broadcast.
//   down (tag kDown, rank 0 -> client): uint64 round + P float32 global values; at the end the
//     uint64 0 and a uint64 saying whether a client was lost.
//   up (tag kUp, client -> rank 0): int64 status (0 trained, 1 failed) + double weight + P float32
//     (w * delta), or P uint64 masked when secure; a failed client without secure aggregation
//     sends the header only.
#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <fstream>
#include <iostream>
#include <memory>
#include <thread>

#include "commands.h"
#include "edgetune/core/file_io.h"
#include "edgetune/data/labels.h"
#include "edgetune/engine/federated.h"
#include "edgetune/optim/privacy.h"
#include "settings_cli.h"

namespace edgetune::cli {
namespace {

namespace fs = std::filesystem;

constexpr int kDown = 1;
constexpr int kUp = 2;

struct FederatedArgs {
  TrainConfig train;  // the clients' training settings and the server's model and --eval
  fs::path shards;
  fs::path out;
  int rounds = 10;
  std::int64_t local_steps = 10;
  bool secure = false;
  double dp_clip = 0;
  double dp_noise = 0;
  double dp_delta = 1e-5;
  double client_timeout = 0;
  double server_lr = 1;
  double server_momentum = 0;
  std::unique_ptr<SettingsBinder> bound;
};

// MPI_Init / MPI_Finalize around the command. MPI_Finalize synchronises with every rank, a dead
// one included, and OpenMPI 4.1 at times waits there for ever: after losing a client the ranks
// leave without it (finalize = false), which mpirun --enable-recovery accepts.
struct MpiSession {
  bool finalize = true;
  MpiSession() { MPI_Init(nullptr, nullptr); }
  ~MpiSession() {
    if (finalize) MPI_Finalize();
  }
  MpiSession(const MpiSession&) = delete;
  MpiSession& operator=(const MpiSession&) = delete;
};

void check(int rc, const char* what) {
  if (rc != MPI_SUCCESS) throw std::runtime_error(std::string("MPI: ") + what + " failed");
}

// Broadcasts s from rank 0 (its size, then its bytes); returns the bytes on every rank.
std::string bcast_bytes(std::string s) {
  std::uint64_t n = s.size();
  check(MPI_Bcast(&n, 1, MPI_UINT64_T, 0, MPI_COMM_WORLD), "broadcast");
  s.resize(n);
  check(MPI_Bcast(s.data(), static_cast<int>(n), MPI_BYTE, 0, MPI_COMM_WORLD), "broadcast");
  return s;
}

template <class T>
void put(std::vector<unsigned char>& buf, std::size_t at, const T* v, std::size_t n) {
  std::memcpy(buf.data() + at, v, n * sizeof(T));
}

fs::path shard_of(const FederatedArgs& a, int client) {
  return a.shards / ("client-" + std::to_string(client + 1) + ".jsonl");
}

// One client (rank client + 1) from setup to the last round. Returns whether rank 0 lost a client.
bool run_client(const FederatedArgs& a, int client, int clients) {
  const fs::path home = a.out / "clients" / ("client-" + std::to_string(client + 1));
  fs::create_directories(home);
  const fs::path global_dir = home / "global";
  fs::create_directories(global_dir);
  write_file_atomic(global_dir / "adapter_config.json", bcast_bytes({}));
  write_file_atomic(global_dir / "labels.json", bcast_bytes({}));
  write_file_atomic(global_dir / "adapter_model.safetensors", bcast_bytes({}));
  federated::Adapter global = federated::read_adapter(global_dir);
  const std::size_t p = federated::value_count(global);

  std::optional<federated::KeyPair> keys;
  std::vector<federated::PublicKey> publics(static_cast<std::size_t>(clients));
  if (a.secure) {
    keys = federated::make_key_pair();
    check(
        MPI_Gather(keys->public_key.data(), 32, MPI_BYTE, nullptr, 32, MPI_BYTE, 0, MPI_COMM_WORLD),
        "gather");
    std::vector<unsigned char> all(32 * static_cast<std::size_t>(clients + 1));
    check(MPI_Bcast(all.data(), static_cast<int>(all.size()), MPI_BYTE, 0, MPI_COMM_WORLD),
          "broadcast");
    for (int j = 0; j < clients; ++j)
      std::memcpy(publics[static_cast<std::size_t>(j)].data(), all.data() + 32 * (j + 1), 32);
  }

  std::ofstream log(home / "train.log");
  std::vector<unsigned char> down(std::max<std::size_t>(16, federated::kDownHeaderBytes + 4 * p));
  for (;;) {
    check(MPI_Recv(down.data(), static_cast<int>(down.size()), MPI_BYTE, 0, kDown, MPI_COMM_WORLD,
                   MPI_STATUS_IGNORE),
          "receive");
    std::uint64_t round = 0;
    std::memcpy(&round, down.data(), 8);
    if (round == 0) {
      std::uint64_t lost = 0;
      std::memcpy(&lost, down.data() + 8, 8);
      return lost != 0;
    }
    std::vector<float> g(p);
    std::memcpy(g.data(), down.data() + federated::kDownHeaderBytes, 4 * p);
    federated::set_values(global, g);
    federated::write_adapter(global, global_dir);

    TrainConfig c = a.train;
    c.train_file = shard_of(a, client);
    c.eval_file.clear();
    c.init_adapter = global_dir;
    c.out = home / "run";
    c.max_steps = a.local_steps;
    // A new order of the shard each round (the same seed would train on the same first S batches).
    c.seed = a.train.seed + 7919 * round + static_cast<std::uint64_t>(client);
    fs::remove_all(c.out);
    std::int64_t status = 0;
    double weight = 0;
    std::vector<float> u(p, 0.0f);
    try {
      federated::ClientUpdate up = federated::client_round(c, &log);
      if (a.dp_clip > 0) federated::clip_to_norm(up.delta, a.dp_clip);
      // With DP every client weighs the same, so that one client changes the sum by at most C.
      weight = a.dp_clip > 0 ? 1.0 : static_cast<double>(up.examples);
      for (std::size_t k = 0; k < p; ++k) u[k] = static_cast<float>(weight * up.delta[k]);
    } catch (const std::exception& e) {
      std::cerr << "edgetune: client " << client + 1 << ", round " << round
                << ": training failed, dropped from the round: " << e.what() << "\n";
      status = 1;
      weight = 0;
    }
    const bool payload = a.secure || status == 0;
    std::vector<unsigned char> up(federated::kUpHeaderBytes +
                                  (payload ? (a.secure ? 8 : 4) * p : 0));
    put(up, 0, &status, 1);
    put(up, 8, &weight, 1);
    if (a.secure) {
      // A failed client still uploads its masks (over zeros), or the others' would not cancel.
      const std::vector<std::uint64_t> m =
          federated::masked_upload(u, client, *keys, publics, round);
      put(up, federated::kUpHeaderBytes, m.data(), p);
    } else if (payload) {
      put(up, federated::kUpHeaderBytes, u.data(), p);
    }
    check(MPI_Send(up.data(), static_cast<int>(up.size()), MPI_BYTE, 0, kUp, MPI_COMM_WORLD),
          "send");
  }
}

// Sends `down` to the clients still alive and receives their uploads into ups, both
// nonblocking. With --client-timeout, a client whose upload has not come by then is taken for
// dead (killed, or slower than the timeout) and marked so in `alive`: its receive is cancelled and
// a send to it still pending is let go (their buffers move to `abandoned`, which outlives
// MPI_Finalize), and it is sent nothing more. Under mpirun this needs --enable-recovery, or
// mpirun ends the job when a rank dies.
void exchange(const FederatedArgs& a, std::vector<unsigned char> down,
              std::vector<std::vector<unsigned char>>& ups, std::vector<bool>& alive,
              std::vector<std::vector<unsigned char>>& abandoned) {
  using Clock = std::chrono::steady_clock;
  const std::size_t clients = ups.size();
  // Receives first, sends second, and the sends last in the list.
  std::vector<MPI_Request> requests(2 * clients, MPI_REQUEST_NULL);
  for (std::size_t c = 0; c < clients; ++c) {
    if (!alive[c]) continue;
    check(MPI_Irecv(ups[c].data(), static_cast<int>(ups[c].size()), MPI_BYTE,
                    static_cast<int>(c + 1), kUp, MPI_COMM_WORLD, &requests[c]),
          "receive");
    check(MPI_Isend(down.data(), static_cast<int>(down.size()), MPI_BYTE, static_cast<int>(c + 1),
                    kDown, MPI_COMM_WORLD, &requests[clients + c]),
          "send");
  }
  const int n = static_cast<int>(requests.size());
  if (a.client_timeout <= 0) {
    check(MPI_Waitall(n, requests.data(), MPI_STATUSES_IGNORE), "exchange");
    return;
  }
  const auto deadline = Clock::now() + std::chrono::duration<double>(a.client_timeout);
  for (;;) {
    int all = 0;
    check(MPI_Testall(n, requests.data(), &all, MPI_STATUSES_IGNORE), "exchange");
    if (all || Clock::now() > deadline) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  bool let_go = false;
  for (std::size_t c = 0; c < clients; ++c) {
    int received = 0, sent = 0;
    check(MPI_Test(&requests[c], &received, MPI_STATUS_IGNORE), "receive");
    check(MPI_Test(&requests[clients + c], &sent, MPI_STATUS_IGNORE), "send");
    if (received && sent) continue;
    // Neither request is waited for: a receive the dead client had begun (its upload's header
    // came, its data never will) does not complete even when cancelled.
    if (!received) {
      check(MPI_Cancel(&requests[c]), "cancel");
      check(MPI_Request_free(&requests[c]), "receive");
      abandoned.push_back(std::move(ups[c]));
    }
    if (!sent) {
      check(MPI_Request_free(&requests[clients + c]), "send");
      let_go = true;
    }
    if (alive[c]) {
      alive[c] = false;
      std::cerr
          << "edgetune: client " << c + 1 << " sent nothing within " << a.client_timeout
          << " s (killed, or slower than --client-timeout): dropped from this round and the next\n";
    }
  }
  if (let_go) abandoned.push_back(std::move(down));
}

// The labels of the evaluation file, in the order a training run would give them.
std::vector<std::string> eval_labels(const TrainConfig& c) {
  return data::LabelMap::from_dataset(read_data(c.eval_file, c.data, true)).id2label();
}

// Rank 0. `abandoned` keeps the buffers of sends to clients taken for dead. Returns whether a
// client was lost.
bool run_server(const FederatedArgs& a, int clients,
                std::vector<std::vector<unsigned char>>& abandoned) {
  using Clock = std::chrono::steady_clock;
  fs::create_directories(a.out);
  federated::write_initial_adapter(a.train, eval_labels(a.train), a.out);
  bcast_bytes(read_file(a.out / "adapter_config.json"));
  bcast_bytes(read_file(a.out / "labels.json"));
  bcast_bytes(read_file(a.out / "adapter_model.safetensors"));
  federated::Adapter global = federated::read_adapter(a.out);
  const std::size_t p = federated::value_count(global);
  if (a.secure) {
    std::vector<unsigned char> all(32 * static_cast<std::size_t>(clients + 1));
    std::vector<unsigned char> none(32, 0);
    check(MPI_Gather(none.data(), 32, MPI_BYTE, all.data(), 32, MPI_BYTE, 0, MPI_COMM_WORLD),
          "gather");
    check(MPI_Bcast(all.data(), static_cast<int>(all.size()), MPI_BYTE, 0, MPI_COMM_WORLD),
          "broadcast");
  }
  const EvalReport start = federated::evaluate_adapter(a.train, a.out);
  std::cerr << "round 0: accuracy " << start.accuracy << " (" << clients << " clients, " << p
            << " adapter values" << (a.secure ? ", secure aggregation" : "") << ")\n";

  std::string metrics = nlohmann::json{{"round", 0},
                                       {"accuracy", start.accuracy},
                                       {"loss", start.loss},
                                       {"macro_f1", start.macro_f1}}
                            .dump() +
                        "\n";
  write_file_atomic(a.out / "metrics.jsonl", metrics);
  const auto t0 = Clock::now();
  const std::size_t up_max = federated::kUpHeaderBytes + (a.secure ? 8 : 4) * p;
  std::vector<bool> alive(static_cast<std::size_t>(clients), true);
  double epsilon = 0;
  federated::ServerOptimizer server(a.server_lr, a.server_momentum);
  for (int round = 1; round <= a.rounds; ++round) {
    const auto r0 = Clock::now();
    std::vector<unsigned char> down(federated::kDownHeaderBytes + 4 * p);
    const std::uint64_t r = static_cast<std::uint64_t>(round);
    const std::vector<float> g = federated::values(global);
    put(down, 0, &r, 1);
    put(down, federated::kDownHeaderBytes, g.data(), p);
    const std::vector<bool> sent_to = alive;
    const int reached = static_cast<int>(std::count(alive.begin(), alive.end(), true));
    std::vector<std::vector<unsigned char>> ups(static_cast<std::size_t>(clients),
                                                std::vector<unsigned char>(up_max));
    exchange(a, std::move(down), ups, alive, abandoned);

    std::vector<double> sum(p, 0.0);
    std::vector<std::vector<std::uint64_t>> masked;
    double total = 0;
    int trained = 0, failed_plain = 0, uploads = 0;
    nlohmann::json dropped = nlohmann::json::array();
    for (int c = 0; c < clients; ++c) {
      if (!sent_to[static_cast<std::size_t>(c)]) continue;
      if (!alive[static_cast<std::size_t>(c)]) {
        dropped.push_back(c + 1);
        if (a.secure) {
          throw std::runtime_error("secure aggregation has no dropout recovery: without client " +
                                   std::to_string(c + 1) +
                                   "'s upload the round's sum stays masked");
        }
        continue;
      }
      ++uploads;
      const std::vector<unsigned char>& m = ups[static_cast<std::size_t>(c)];
      std::int64_t status = 0;
      double weight = 0;
      std::memcpy(&status, m.data(), 8);
      std::memcpy(&weight, m.data() + 8, 8);
      if (status != 0) {
        dropped.push_back(c + 1);
        failed_plain += a.secure ? 0 : 1;
      } else {
        ++trained;
        total += weight;
      }
      if (a.secure) {
        std::vector<std::uint64_t> v(p);
        std::memcpy(v.data(), m.data() + federated::kUpHeaderBytes, 8 * p);
        masked.push_back(std::move(v));
      } else if (status == 0) {
        std::vector<float> v(p);
        std::memcpy(v.data(), m.data() + federated::kUpHeaderBytes, 4 * p);
        federated::accumulate(sum, v, 1.0);
      }
    }
    if (a.secure) sum = federated::unmask_sum(masked);
    nlohmann::json line = {{"round", round}, {"clients", trained}, {"dropped", dropped}};
    if (trained == 0) {
      std::cerr << "edgetune: round " << round
                << ": every client failed; the global adapter stays as it was\n";
    } else {
      if (a.dp_noise > 0) {
        federated::add_gaussian_noise(sum, a.dp_noise, a.dp_clip, a.train.seed * 1000003 + r);
        // Every client takes part in every round: the sampled Gaussian mechanism at q = 1.
        epsilon = optim::sampled_gaussian_privacy(1.0, a.dp_noise, round, a.dp_delta).epsilon;
        line["epsilon"] = epsilon;
        line["delta"] = a.dp_delta;
      }
      std::vector<float> next = federated::values(global);
      server.step(next, sum, total);
      federated::set_values(global, next);
      federated::write_adapter(global, a.out);
    }
    const EvalReport e = federated::evaluate_adapter(a.train, a.out);
    const federated::Traffic t =
        federated::round_traffic(p, reached, uploads, failed_plain, a.secure);
    const double seconds = std::chrono::duration<double>(Clock::now() - r0).count();
    line["accuracy"] = e.accuracy;
    line["loss"] = e.loss;
    line["macro_f1"] = e.macro_f1;
    line["bytes_down"] = t.down;
    line["bytes_up"] = t.up;
    line["bytes"] = t.total();
    line["seconds"] = seconds;
    metrics += line.dump() + "\n";
    write_file_atomic(a.out / "metrics.jsonl", metrics);
    std::cerr << "round " << round << ": accuracy " << e.accuracy << ", " << trained << " of "
              << reached << " clients, " << t.total() << " bytes, " << seconds << " s"
              << (a.dp_noise > 0 ? ", epsilon " + std::to_string(epsilon) : std::string()) << "\n";
  }
  // The end: round 0 and whether a client was lost (small enough to leave at once).
  const bool lost = std::count(alive.begin(), alive.end(), false) > 0;
  const std::uint64_t done[2] = {0, lost ? 1u : 0u};
  for (int c = 0; c < clients; ++c) {
    if (!alive[static_cast<std::size_t>(c)]) continue;
    check(MPI_Send(done, 16, MPI_BYTE, c + 1, kDown, MPI_COMM_WORLD), "send");
  }
  std::cerr << "done: " << a.rounds << " rounds in "
            << std::chrono::duration<double>(Clock::now() - t0).count() << " s; adapter in "
            << a.out.string();
  if (a.dp_noise > 0)
    std::cerr << "; client-level (epsilon " << epsilon << ", delta " << a.dp_delta << ")";
  std::cerr << "\n";
  return lost;
}

int run(FederatedArgs& a) {
  if (a.dp_noise > 0 && !(a.dp_clip > 0))
    throw UsageError("federated: --client-dp-noise-multiplier needs --client-dp-clip C");
  if (a.dp_noise > 0 && !(a.dp_delta > 0 && a.dp_delta < 1))
    throw UsageError("federated: --client-dp-delta must be in (0, 1)");
  settings::check_ranges(a.train);
  std::vector<std::vector<unsigned char>> abandoned;  // outlives MPI_Finalize (see exchange)
  MpiSession mpi;
  int rank = 0, size = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  // Errors come back as codes (check() throws), so that a dead peer is a message, not an abort.
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  const int clients = size - 1;
  if (clients < 1) {
    throw UsageError(
        "federated: start it under MPI with one rank per client and one for the server: "
        "mpirun -n K+1 edgetune federated ...");
  }
  if (a.secure && clients > federated::kMaxSecureClients) {
    throw UsageError("federated: secure aggregation sums at most " +
                     std::to_string(federated::kMaxSecureClients) + " clients");
  }
  if (a.train.memory_budget > 0) limit_allocator_slack();
  try {
    const bool lost =
        rank == 0 ? run_server(a, clients, abandoned) : run_client(a, rank - 1, clients);
    mpi.finalize = !lost;
  } catch (const std::exception& e) {
    // One rank failing outside a client's training leaves the others waiting: end them all.
    std::cerr << "edgetune: error: rank " << rank << ": " << e.what() << "\n";
    MPI_Abort(MPI_COMM_WORLD, 1);
  }
  return 0;
}

const RegisterCommand kRegister{
    "federated",
    "federated averaging of an adapter over MPI: mpirun -n K+1 edgetune federated ... (rank 0 "
    "averages)",
    [](CLI::App& app) -> std::function<int()> {
      auto a = std::make_shared<FederatedArgs>();
      a->train.schedule = optim::Schedule::Kind::Constant;
      // The run layer's settings of the clients' training, but those a federated round sets itself.
      a->bound = std::make_unique<SettingsBinder>(
          app, std::set<std::string>{"train", "out", "init_adapter", "eval_split", "epochs",
                                     "early_stopping", "save_every", "max_steps"});
      TrainConfig::fields(a->train, *a->bound);
      app.add_option(
             "--shards", a->shards,
             "folder of the clients' files client-1.jsonl ... client-K.jsonl (edgetune split)")
          ->required()
          ->check(CLI::ExistingDirectory);
      app.add_option("--out", a->out,
                     "run folder: the global adapter, metrics.jsonl, the clients' folders")
          ->required();
      app.add_option("--rounds", a->rounds, "federated rounds")
          ->capture_default_str()
          ->check(CLI::PositiveNumber);
      app.add_option("--local-steps", a->local_steps, "optimizer steps of each client per round")
          ->capture_default_str()
          ->check(CLI::PositiveNumber);
      app.add_flag("--secure-aggregation", a->secure,
                   "mask each upload with pairwise keys (X25519), so rank 0 learns only the sum");
      app.add_option("--client-dp-clip", a->dp_clip,
                     "client-level DP: clip each client's delta to this L2 norm (0: off)")
          ->capture_default_str()
          ->check(CLI::NonNegativeNumber);
      app.add_option(
             "--client-dp-noise-multiplier", a->dp_noise,
             "client-level DP: rank 0 adds N(0, (S * C)^2) per coordinate to the sum (0: off)")
          ->capture_default_str()
          ->check(CLI::NonNegativeNumber);
      app.add_option("--client-dp-delta", a->dp_delta, "delta of the reported (epsilon, delta)")
          ->capture_default_str();
      app.add_option("--server-lr", a->server_lr,
                     "rank 0's step size over the round's mean delta (1: FedAvg)")
          ->capture_default_str()
          ->check(CLI::PositiveNumber);
      app.add_option("--server-momentum", a->server_momentum,
                     "rank 0's momentum over the rounds' mean deltas (FedAvgM; 0: FedAvg)")
          ->capture_default_str()
          ->check(CLI::Range(0.0, 0.999));
      app.add_option(
             "--client-timeout", a->client_timeout,
             "seconds rank 0 waits for the uploads of a round; a client silent that long is "
             "dropped "
             "for good (0: wait for every client; a killed client needs mpirun --enable-recovery)")
          ->capture_default_str()
          ->check(CLI::NonNegativeNumber);
      return [a] {
        if (a->bound->options().at("model")->count() == 0 ||
            a->bound->options().at("eval")->count() == 0) {
          throw UsageError(
              "federated needs --model DIR, --eval FILE, --shards DIR and --out RUN_DIR");
        }
        return run(*a);
      };
    }};

}  // namespace
}  // namespace edgetune::cli
