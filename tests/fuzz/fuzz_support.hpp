#pragma once
// Shared pieces of the libFuzzer targets: a private scratch folder for readers that take a path, and the rule
// every target applies (only InputError may leave the library; anything else is a finding).
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <string>

namespace moescope::fuzz {

/// A folder of this process's own under $TMPDIR (or /tmp), made once; the targets write their input there.
inline const std::string& scratch_dir() {
  static const std::string dir = [] {
    const char* base = std::getenv("TMPDIR");
    std::string d = std::string(base && *base ? base : "/tmp") + "/moescope-fuzz-" + std::to_string(::getpid());
    std::filesystem::create_directories(d);
    return d;
  }();
  return dir;
}

/// Writes `size` bytes to scratch_dir()/name and returns the path. Aborts when the write fails (a full /tmp is
/// not a finding of the parser, so stop the run loudly instead).
inline std::string write_scratch(const std::string& name, const std::uint8_t* data, std::size_t size) {
  const std::string path = scratch_dir() + "/" + name;
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (!f || (size > 0 && std::fwrite(data, 1, size, f) != size) || std::fclose(f) != 0) {
    std::perror(path.c_str());
    std::abort();
  }
  return path;
}

/// An input was refused: the message must be one line (no CR or LF: file text is escaped) of bounded length
/// (file text is cut), as the CLI prints it after "moescope: error: ". Traps otherwise: a finding.
inline void refused(const std::exception& e) {
  const std::string m = e.what();
  if (m.find_first_of("\r\n") != std::string::npos || m.size() > 2048) {
    std::fprintf(stderr, "bad error message (%zu bytes): %.300s\n", m.size(), m.c_str());
    __builtin_trap();
  }
}

}  // namespace moescope::fuzz
