#include "experiments/run/networks.hpp"

#include <fmt/format.h>

#include <dlfcn.h>

#include <cstdlib>
#include <filesystem>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

namespace diffode {
namespace {

constexpr const char* kLibraryName = "libdiffode_networks.so";
// The interface this program is built with, and the oldest it still reads: version 4 only appended
// solve_on_device to version 3's table, so a version-3 backend serves everything else (and
// device_state_backend refuses it).
constexpr int kAbiVersion = 4;
constexpr int kOldestAbiVersion = 3;

std::mutex backend_mutex;
const NetworkBackend* installed = nullptr;

std::vector<std::string> candidates() {
  std::vector<std::string> paths;
  if (const char* env = std::getenv("DIFFODE_NETWORK_BACKEND"); env != nullptr && *env != '\0') {
    paths.emplace_back(env);
    return paths;  // an explicit choice is the only one tried
  }
  std::error_code error;
  const auto program = std::filesystem::read_symlink("/proc/self/exe", error);
  if (!error) paths.push_back((program.parent_path() / kLibraryName).string());
  return paths;
}

const NetworkBackend* open_backend() {
  std::string why;
  for (const std::string& path : candidates()) {
    if (!std::filesystem::exists(path)) {
      why += fmt::format("\n  {}: no such file", path);
      continue;
    }
    // RTLD_LOCAL: the backend's copies of the lower layers stay its own. Never closed: models it
    // made may live until exit.
    void* handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (handle == nullptr) {
      why += fmt::format("\n  {}: {}", path, dlerror());
      continue;
    }
    using Entry = const NetworkBackend* (*)();
    const auto entry = reinterpret_cast<Entry>(dlsym(handle, "diffode_network_backend"));
    if (entry == nullptr) {
      why += fmt::format("\n  {}: no symbol diffode_network_backend", path);
      continue;
    }
    const NetworkBackend* backend = entry();
    if (backend == nullptr || backend->abi_version < kOldestAbiVersion || backend->abi_version > kAbiVersion) {
      why += fmt::format("\n  {}: interface version {} (this program reads {} to {}): rebuild both together", path,
                         backend ? backend->abi_version : 0, kOldestAbiVersion, kAbiVersion);
      continue;
    }
    return backend;
  }
  throw std::runtime_error(fmt::format("networks need the LibTorch backend {}, which this build does not have or could not open "
                                       "(configure with -DDIFFODE_WITH_TORCH=ON, or set DIFFODE_NETWORK_BACKEND to its path):{}",
                                       kLibraryName, why));
}

}  // namespace

const NetworkBackend& network_backend() {
  const std::lock_guard lock(backend_mutex);
  if (installed == nullptr) installed = open_backend();
  return *installed;
}

const NetworkBackend& device_state_backend() {
  const NetworkBackend& backend = network_backend();
  if (backend.abi_version < 4 || backend.solve_on_device == nullptr)
    throw std::runtime_error(fmt::format("state = \"device\" needs a network backend of interface version 4 (solve_on_device); this one is "
                                         "version {}: rebuild {} with this program",
                                         backend.abi_version, kLibraryName));
  return backend;
}

void use_network_backend(const NetworkBackend* backend) {
  const std::lock_guard lock(backend_mutex);
  installed = backend;
}

}  // namespace diffode
