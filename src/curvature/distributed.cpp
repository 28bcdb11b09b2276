#include "moescope/curvature/distributed.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

#include "moescope/gloo_config.hpp"
#include "moescope/util/error.hpp"

#if MOESCOPE_HAVE_GLOO
#ifndef USE_C10D_GLOO
#define USE_C10D_GLOO 1  // the c10d header declares the Gloo backend only under this macro
#endif
#include <torch/csrc/distributed/c10d/FileStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#endif

namespace moescope {

std::pair<std::int64_t, std::int64_t> shard_range(std::int64_t n, int rank, int world_size) {
  if (world_size < 1) throw std::invalid_argument("shard_range: world_size = " + std::to_string(world_size));
  if (rank < 0 || rank >= world_size)
    throw std::invalid_argument("shard_range: rank " + std::to_string(rank) + " outside [0, " +
                                std::to_string(world_size) + ")");
  const std::int64_t base = n / world_size, extra = n % world_size;
  const std::int64_t begin = rank * base + std::min<std::int64_t>(rank, extra);
  return {begin, begin + base + (rank < extra ? 1 : 0)};
}

namespace {

struct InitSpec {
  bool tcp = false;
  std::string host;
  std::uint16_t port = 0;
  std::string path;
};

InitSpec parse_init(const std::string& init) {
  InitSpec s;
  const std::string tcp = "tcp://", file = "file://";
  if (init.rfind(tcp, 0) == 0) {
    const std::string rest = init.substr(tcp.size());
    const auto colon = rest.rfind(':');
    if (colon == std::string::npos || colon == 0)
      throw InputError("distributed init: expected tcp://HOST:PORT, got '" + init + "'");
    s.tcp = true;
    s.host = rest.substr(0, colon);
    const std::string port = rest.substr(colon + 1);
    if (port.empty() || port.size() > 5 || port.find_first_not_of("0123456789") != std::string::npos ||
        std::stoi(port) < 1 || std::stoi(port) > 65535)
      throw InputError("distributed init: port '" + port + "' is not in 1..65535 in '" + init + "'");
    s.port = static_cast<std::uint16_t>(std::stoi(port));
    return s;
  }
  if (init.rfind(file, 0) == 0 && init.size() > file.size()) {
    s.path = init.substr(file.size());
    return s;
  }
  throw InputError("distributed init: expected tcp://HOST:PORT or file://PATH, got '" + init + "'");
}

void check_options(const DistributedOptions& o) {
  if (o.world_size < 1) throw InputError("distributed world_size: must be at least 1, got " + std::to_string(o.world_size));
  if (o.rank < 0 || o.rank >= o.world_size)
    throw InputError("distributed rank: " + std::to_string(o.rank) + " is outside [0, " + std::to_string(o.world_size) + ")");
  if (!(o.timeout_s > 0.0) || !std::isfinite(o.timeout_s))
    throw InputError("distributed timeout must be positive, got " + std::to_string(o.timeout_s));
  if (o.world_size > 1 && o.init.empty()) throw InputError("distributed init: required when --world-size > 1");
}

}  // namespace

#if MOESCOPE_HAVE_GLOO

bool distributed_available() { return true; }

struct DataParallelGroup::Impl {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::ProcessGroupGloo> group;
};

DataParallelGroup::DataParallelGroup(const DistributedOptions& opts) : impl_(std::make_unique<Impl>()) {
  check_options(opts);
  rank_ = opts.rank;
  world_size_ = opts.world_size;
  if (world_size_ == 1) return;  // nothing to join: all_reduce_sum is the identity
  const InitSpec init = parse_init(opts.init);
  const auto timeout = std::chrono::milliseconds(static_cast<std::int64_t>(opts.timeout_s * 1000.0));
  if (init.tcp) {
    c10d::TCPStoreOptions so;
    so.port = init.port;
    so.isServer = rank_ == 0;
    so.numWorkers = static_cast<std::size_t>(world_size_);
    so.waitWorkers = true;
    so.timeout = timeout;
    impl_->store = c10::make_intrusive<c10d::TCPStore>(init.host, so);
  } else {
    impl_->store = c10::make_intrusive<c10d::FileStore>(init.path, world_size_);
  }
  impl_->store->setTimeout(timeout);
  auto go = c10d::ProcessGroupGloo::Options::create(timeout);
  // Over TCP, Gloo's own connections use the interface that reaches HOST (loopback for 127.0.0.1); with a file
  // store, the default device (the host name's address, loopback as a fallback).
  go->devices.push_back(init.tcp ? c10d::ProcessGroupGloo::createDeviceForHostname(init.host)
                                 : c10d::ProcessGroupGloo::createDefaultDevice());
  impl_->group = c10::make_intrusive<c10d::ProcessGroupGloo>(impl_->store, rank_, world_size_, go);
}

DataParallelGroup::~DataParallelGroup() = default;

void DataParallelGroup::all_reduce_sum(torch::Tensor& t) const {
  if (world_size_ == 1) return;
  torch::NoGradGuard no_grad;
  const bool on_cpu = t.device().is_cpu();
  std::vector<torch::Tensor> ts{on_cpu ? t.contiguous() : t.to(torch::kCPU).contiguous()};
  c10d::AllreduceOptions ao;
  ao.reduceOp = c10d::ReduceOp::SUM;
  impl_->group->allreduce(ts, ao)->wait();
  if (on_cpu && ts[0].data_ptr() == t.data_ptr()) return;
  t = on_cpu ? ts[0] : ts[0].to(t.device());
}

#else  // no Gloo in this build

bool distributed_available() { return false; }

struct DataParallelGroup::Impl {};

DataParallelGroup::DataParallelGroup(const DistributedOptions& opts) : impl_(std::make_unique<Impl>()) {
  check_options(opts);
  rank_ = opts.rank;
  world_size_ = opts.world_size;
  if (world_size_ > 1)
    throw InputError("distributed world_size " + std::to_string(world_size_) +
                     ": this moescope was built without c10d's Gloo backend (install libgloo-dev and rebuild)");
}

DataParallelGroup::~DataParallelGroup() = default;

void DataParallelGroup::all_reduce_sum(torch::Tensor&) const {}

#endif

std::function<void(torch::Tensor&)> DataParallelGroup::hook() const {
  return [this](torch::Tensor& t) { all_reduce_sum(t); };
}

}  // namespace moescope
