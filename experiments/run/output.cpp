#include "experiments/run/output.hpp"

#include "experiments/run/hdf5_file.hpp"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstring>
#include <vector>

namespace diffode {
namespace {

namespace fs = std::filesystem;

std::filesystem::path temporary_beside(const std::filesystem::path& path, std::string_view what) {
  return std::filesystem::path(path.string() + fmt::format(".{}-{}", what, ::getpid()));
}

std::string size_text(double bytes) {
  if (bytes >= (1 << 30)) return fmt::format("{:.3g} GiB", bytes / (1 << 30));
  if (bytes >= (1 << 20)) return fmt::format("{:.3g} MiB", bytes / (1 << 20));
  return fmt::format("{:.3g} KiB", bytes / (1 << 10));
}

// Names that fit: the whole path, each component, and the file's own name with its temporary suffix.
std::string name_problem(const fs::path& path, std::size_t max_name) {
  if (path.string().size() >= PATH_MAX - 32) return fmt::format("the path is {} bytes long; at most {}", path.string().size(), PATH_MAX - 32);
  for (const auto& part : path)
    if (part.string().size() > NAME_MAX)
      return fmt::format("the name '{}...' is {} bytes long; at most {}", part.string().substr(0, 16), part.string().size(), NAME_MAX);
  if (path.filename().string().size() > max_name)
    return fmt::format("the file name is {} bytes long; at most {} (it is first written under a longer temporary name)",
                       path.filename().string().size(), max_name);
  return "";
}

// Creates `folder` and its missing parents, recording those it made; "" or why not.
std::string make_folder(const fs::path& folder, std::vector<fs::path>& created) {
  std::error_code ec;
  std::vector<fs::path> missing;
  fs::path existing = folder;
  while (!existing.empty() && !fs::exists(fs::symlink_status(existing, ec))) {
    missing.push_back(existing);
    existing = existing.parent_path();
  }
  if (!existing.empty() && !fs::is_directory(existing, ec)) return fmt::format("{} is not a folder", existing.string());
  for (auto it = missing.rbegin(); it != missing.rend(); ++it) {
    if (!fs::create_directory(*it, ec) && ec) return fmt::format("cannot create the folder {}: {}", it->string(), ec.message());
    created.push_back(*it);
  }
  return "";
}

// Creates a probe file at `probe`, reserves `bytes` in it, removes it; "" or why not.
std::string probe_problem(const fs::path& probe, const fs::path& folder, double bytes) {
  const int fd = ::open(probe.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) return fmt::format("cannot write in {} ({})", folder.string(), std::strerror(errno));
  std::string problem;
  if (bytes > 0) {
    // fallocate(2), not posix_fallocate: where the file system cannot reserve, the latter would
    // write the whole length block by block.
    const int error = ::fallocate(fd, 0, 0, static_cast<off_t>(bytes)) == 0 ? 0 : errno;
    if (error == ENOSPC || error == EFBIG || error == EDQUOT) {
      problem = fmt::format("the results need about {}, and {} has no room for them ({})", size_text(bytes), folder.string(), std::strerror(error));
    } else if (error != 0) {
      // No reservation on this file system: compare with its free space instead.
      struct statvfs fs_info {};
      if (::fstatvfs(fd, &fs_info) == 0 && static_cast<double>(fs_info.f_bavail) * static_cast<double>(fs_info.f_frsize) < bytes)
        problem = fmt::format("the results need about {}, and {} has only {} free", size_text(bytes), folder.string(),
                              size_text(static_cast<double>(fs_info.f_bavail) * static_cast<double>(fs_info.f_frsize)));
    }
  }
  ::close(fd);
  ::unlink(probe.c_str());
  return problem;
}

// Why `path` cannot take a results file ("" when it can); folders made on the way go to `created`.
std::string output_problem(const fs::path& path, double bytes, std::vector<fs::path>& created) {
  if (path.empty()) return "must name a file";
  const std::string name = path.filename().string();
  if (name.empty() || name == "." || name == "..") return fmt::format("{} names a folder, not a file", path.string());
  if (std::string why = name_problem(path, kMaxOutputName); !why.empty()) return why;
  std::error_code ec;
  const fs::file_status status = fs::status(path, ec);
  if (fs::is_directory(status)) return fmt::format("{} is a folder, not a file", path.string());
  if (fs::exists(status) && !fs::is_regular_file(status))
    return fmt::format("{} exists and is not a regular file (a device, a FIFO or a socket): it would be replaced", path.string());
  const fs::path folder = path.has_parent_path() ? path.parent_path() : fs::path(".");
  if (std::string why = make_folder(folder, created); !why.empty()) return why;
  return probe_problem(temporary_beside(path, "probe"), folder, bytes);
}

void remove_created(const std::vector<fs::path>& created) {
  std::error_code ec;
  for (auto it = created.rbegin(); it != created.rend(); ++it) fs::remove(*it, ec);
}

}  // namespace

void check_output_path(const ConfigTable& table, std::string_view key, const std::filesystem::path& path, double bytes) {
  std::vector<fs::path> created;
  const std::string problem = output_problem(path, bytes, created);
  if (problem.empty()) return;
  remove_created(created);
  table.fail(key, problem);
}

void check_output_option(std::string_view option, const std::filesystem::path& path, double bytes) {
  std::vector<fs::path> created;
  const std::string problem = output_problem(path, bytes, created);
  if (problem.empty()) return;
  remove_created(created);
  throw ConfigError(fmt::format("{} {}: {}", option, path.string(), problem));
}

void check_output_folder(std::string_view option, const std::filesystem::path& folder) {
  std::vector<fs::path> created;
  std::string problem;
  if (folder.empty()) problem = "must name a folder";
  if (problem.empty()) problem = name_problem(folder / "x", kMaxOutputName);
  if (problem.empty()) problem = make_folder(folder, created);
  if (problem.empty()) problem = probe_problem(temporary_beside(folder / "diffode", "probe"), folder, 0);
  if (problem.empty()) return;
  remove_created(created);
  throw ConfigError(fmt::format("{} {}: {}", option, folder.string(), problem));
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
      file.close();
    }
    std::filesystem::rename(temporary, path);
  } catch (...) {
    std::error_code ec;
    std::filesystem::remove(temporary, ec);
    throw;
  }
}

}  // namespace diffode
