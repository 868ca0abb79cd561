// Results files are written whole or not at all: under a temporary name beside the target, then
// renamed over it, so a reader (or a crash) never sees a torn file and a refused or failed write
// leaves an earlier result as it was. The target is checked before any work is done.
#pragma once

#include "experiments/run/config.hpp"

#include <filesystem>
#include <functional>
#include <string_view>

namespace diffode {

class Hdf5File;

// The longest file name a results file may have: it is first written under its name plus a
// temporary suffix (".tmp-<pid>", a sweep's ".parts" folder), which must fit the file system's
// 255 bytes as well.
inline constexpr std::size_t kMaxOutputName = 231;

// Checks that `path` can take a results file of about `bytes` bytes before any work is done: not
// empty, not a folder, a device or a FIFO, names that fit, its folder a folder (created when
// missing) where a file can be created, and `bytes` of space there (reserved on a probe file, then
// released). Throws ConfigError naming `table`'s `key`; folders it created are removed again when
// the path is refused. Call it last, once everything else has been checked.
void check_output_path(const ConfigTable& table, std::string_view key, const std::filesystem::path& path, double bytes = 0);
// The same for a path given on the command line: the message names `option` (e.g. "--output").
void check_output_option(std::string_view option, const std::filesystem::path& path, double bytes = 0);
// The same for a folder that results are written into (e.g. `diffode orders --out`).
void check_output_folder(std::string_view option, const std::filesystem::path& folder);

// Refuses a run whose arrays would need more than this machine's memory: `bytes` is the caller's
// estimate of its peak; the message names `key` and states both figures.
void check_memory(const ConfigTable& table, std::string_view key, double bytes);

// Writes `path` through `write` on a temporary file, closes it (an error writing it out throws),
// then renames it over `path`. The temporary file is removed when anything throws (the exception
// then propagates), so `path` is either the complete new file or what it was before.
void write_atomically(const std::filesystem::path& path, const std::function<void(Hdf5File&)>& write);

}  // namespace diffode
