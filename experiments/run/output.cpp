#include "experiments/run/output.hpp"

#include "experiments/run/hdf5_file.hpp"

#include <fmt/format.h>
#include <unistd.h>

#include <cstring>
#include <fstream>

namespace diffode {
namespace {

std::filesystem::path temporary_beside(const std::filesystem::path& path, std::string_view what) {
  return std::filesystem::path(path.string() + fmt::format(".{}-{}", what, ::getpid()));
}

}  // namespace

void check_output_path(const ConfigTable& table, std::string_view key, const std::filesystem::path& path) {
  namespace fs = std::filesystem;
  if (path.empty()) table.fail(key, "must name a file");
  std::error_code ec;
  if (fs::is_directory(path, ec)) table.fail(key, fmt::format("{} is a folder, not a file", path.string()));
  const fs::path folder = path.has_parent_path() ? path.parent_path() : fs::path(".");
  if (fs::exists(folder, ec) && !fs::is_directory(folder, ec)) table.fail(key, fmt::format("{} is not a folder", folder.string()));
  if (!fs::exists(folder, ec) && !fs::create_directories(folder, ec))
    table.fail(key, fmt::format("cannot create the folder {}: {}", folder.string(), ec.message()));
  const fs::path probe = temporary_beside(path, "probe");
  {
    std::ofstream out(probe);
    if (!out) table.fail(key, fmt::format("cannot write in {} ({})", folder.string(), std::strerror(errno)));
  }
  fs::remove(probe, ec);
}

void check_memory(const ConfigTable& table, std::string_view key, double bytes) {
  const double physical = static_cast<double>(::sysconf(_SC_PHYS_PAGES)) * static_cast<double>(::sysconf(_SC_PAGESIZE));
  if (physical > 0 && bytes > physical)
    table.fail(key, fmt::format("needs about {:.3g} GiB of memory, more than this machine's {:.3g} GiB", bytes / (1 << 30), physical / (1 << 30)));
}

void write_atomically(const std::filesystem::path& path, const std::function<void(Hdf5File&)>& write) {
  const std::filesystem::path temporary = temporary_beside(path, "tmp");
  try {
    {
      Hdf5File file(temporary, Hdf5File::Mode::create);
      write(file);
    }
    std::filesystem::rename(temporary, path);
  } catch (...) {
    std::error_code ec;
    std::filesystem::remove(temporary, ec);
    throw;
  }
}

}  // namespace diffode
