#include "experiments/run/provenance.hpp"

#include "experiments/run/hdf5_file.hpp"

#include <Eigen/Core>
#include <fmt/chrono.h>
#include <fmt/format.h>
#include <hdf5.h>
#include <toml++/toml.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <cstdio>
#include <memory>

#ifndef DIFFODE_SOURCE_DIR
#define DIFFODE_SOURCE_DIR "."
#endif
#ifndef DIFFODE_VERSION
#define DIFFODE_VERSION "unknown"
#endif

namespace diffode {
namespace {

std::string run_command(const std::string& command) {
  std::unique_ptr<FILE, int (*)(FILE*)> pipe(popen(command.c_str(), "r"), pclose);
  if (!pipe) return {};
  std::string out;
  std::array<char, 256> buffer{};
  while (fgets(buffer.data(), buffer.size(), pipe.get())) out += buffer.data();
  while (!out.empty() && (out.back() == '\n' || out.back() == '\r')) out.pop_back();
  return out;
}

}  // namespace

Provenance collect_provenance(int argc, char** argv) {
  Provenance p;
  for (int i = 0; i < argc; ++i) p.command_line += (i ? " " : "") + std::string(argv[i]);
  const std::string git = fmt::format("git -C '{}' ", DIFFODE_SOURCE_DIR);
  p.commit = run_command(git + "rev-parse HEAD 2>/dev/null");
  if (p.commit.empty()) p.commit = "unknown (not run from a git checkout)";
  else if (!run_command(git + "status --porcelain --untracked-files=no 2>/dev/null").empty()) p.commit += "+dirty";
  unsigned h5_major = 0, h5_minor = 0, h5_release = 0;
  H5get_libversion(&h5_major, &h5_minor, &h5_release);
  p.versions = fmt::format("diffode {}; g++ {}; Eigen {}.{}.{}; fmt {}; HDF5 {}.{}.{}; toml++ {}.{}.{}", DIFFODE_VERSION, __VERSION__,
                           EIGEN_WORLD_VERSION, EIGEN_MAJOR_VERSION, EIGEN_MINOR_VERSION, FMT_VERSION, h5_major, h5_minor,
                           h5_release, TOML_LIB_MAJOR, TOML_LIB_MINOR, TOML_LIB_PATCH);
  std::array<char, 256> host{};
  gethostname(host.data(), host.size() - 1);
  p.host = host.data();
  p.start_time = fmt::format("{:%Y-%m-%dT%H:%M:%SZ}", fmt::gmtime(std::chrono::system_clock::to_time_t(std::chrono::system_clock::now())));
  return p;
}

void write_provenance(Hdf5File& file, const Provenance& p) {
  file.write_attribute("/", "command_line", p.command_line);
  file.write_attribute("/", "commit", p.commit);
  file.write_attribute("/", "versions", p.versions);
  file.write_attribute("/", "host", p.host);
  file.write_attribute("/", "start_time", p.start_time);
}

void write_model_provenance(Hdf5File& file, const std::string& object, const std::string& description) {
  file.write_attribute(object, "model", description);
}

}  // namespace diffode
