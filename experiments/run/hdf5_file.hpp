// A small RAII layer over the HDF5 C API: the datasets and attributes diffode reads and writes.
// Matrices are stored row-major as HDF5 stores them (rows = samples), so h5py and pandas read the
// same layout the project holds in memory.
#pragma once

#include "core/state.hpp"

#include <cstdint>
#include <filesystem>
#include <string>
#include <utility>
#include <variant>
#include <vector>

namespace diffode {

// One column of a table written as a compound dataset: h5py reads the table as a numpy structured
// array in one call (f["summary"][()]), and pandas.DataFrame takes that array as it is. Strings are
// fixed-length (width bytes, at least 1; longer values are cut), which numpy maps to an 'S' field.
struct TableColumn {
  std::string name;
  std::variant<std::vector<double>, std::vector<std::int64_t>, std::vector<std::string>> values;
  std::size_t width = 0;  // strings: bytes per entry; 0 = the longest value
};

class Hdf5File {
 public:
  enum class Mode { read, create };
  Hdf5File(const std::filesystem::path& path, Mode mode);
  ~Hdf5File();
  Hdf5File(const Hdf5File&) = delete;
  Hdf5File& operator=(const Hdf5File&) = delete;

  const std::filesystem::path& path() const { return path_; }

  // Datasets; names may contain '/', intermediate groups are created as needed.
  void write_matrix(const std::string& name, const Batch& values);
  void write_vector(const std::string& name, const std::vector<double>& values);
  // A 1-D int64 dataset (class labels, one per sample row), and its reading back.
  void write_int64_vector(const std::string& name, const std::vector<std::int64_t>& values);
  std::vector<std::int64_t> read_int64_vector(const std::string& name) const;
  // A 1-D dataset reads as one column. A dataset that would not fit in this machine's memory is
  // refused before anything is allocated (its extent may be far larger than the file).
  Batch read_matrix(const std::string& name) const;
  std::vector<double> read_vector(const std::string& name) const;
  // A dataset's (rows, columns), a 1-D dataset as one column; and rows [first, first + count) of
  // it, so that a dataset larger than memory can be streamed a block at a time.
  std::pair<Index, Index> shape(const std::string& name) const;
  Batch read_rows(const std::string& name, Index first, Index count) const;
  bool has(const std::string& name) const;

  // Groups: created with any missing parents; the names of a group's members, sorted.
  void create_group(const std::string& name);
  std::vector<std::string> members(const std::string& group) const;
  // Copies an object (group or dataset, with everything below it and its attributes) from another
  // open file to `name` here.
  void copy_from(const Hdf5File& source, const std::string& source_name, const std::string& name);
  // A compound dataset of equal-length columns.
  void write_table(const std::string& name, const std::vector<TableColumn>& columns);

  // String and number attributes on the root ("/") or on a group or dataset.
  void write_attribute(const std::string& object, const std::string& name, const std::string& value);
  void write_attribute(const std::string& object, const std::string& name, double value);
  std::string read_string_attribute(const std::string& object, const std::string& name) const;
  double read_double_attribute(const std::string& object, const std::string& name) const;
  bool has_attribute(const std::string& object, const std::string& name) const;

  void flush();
  // Closes the file, throwing when HDF5 could not write it out (no space left, ...): a file about
  // to be renamed into place must be closed this way, the destructor cannot report.
  void close();

 private:
  void ensure_parent_groups(const std::string& name);
  std::filesystem::path path_;
  long long file_ = -1;  // hid_t, kept opaque so this header needs no HDF5 include
};

}  // namespace diffode
