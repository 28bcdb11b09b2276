# Hardening (issue 15): the libFuzzer targets and the kill -9 harness.
#
# libFuzzer targets (tests/fuzz/fuzz_*.cpp), built with -DMOESCOPE_FUZZ=ON and clang (tools/fuzz.sh does both).
# moescope_fuzz_flags() runs before the libraries are declared: every source of the build gets coverage
# instrumentation and ASan + UBSan, and FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION (io/zip then computes CRC-32s
# but does not enforce them, so that mutations reach the pickle VM). moescope_fuzz_targets() runs after: one
# executable per fuzz_*.cpp; fuzz_*_torch.cpp link moescope_core, the others moescope_base only.
option(MOESCOPE_FUZZ "Build the libFuzzer targets in tests/fuzz (clang only)" OFF)

macro(moescope_fuzz_flags)
  if(MOESCOPE_FUZZ)
    if(NOT CMAKE_CXX_COMPILER_ID MATCHES "Clang")
      message(FATAL_ERROR "MOESCOPE_FUZZ needs clang (libFuzzer): configure with -DCMAKE_CXX_COMPILER=clang++ "
                          "-DCMAKE_C_COMPILER=clang, or run tools/fuzz.sh")
    endif()
    if(MOESCOPE_SANITIZE)
      message(FATAL_ERROR "MOESCOPE_FUZZ already builds with address and UB sanitizers: leave MOESCOPE_SANITIZE off")
    endif()
    add_compile_options(-fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined
                        -fno-omit-frame-pointer -g)
    add_compile_definitions(FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION)
    add_link_options(-fsanitize=address,undefined)
  endif()
endmacro()

function(moescope_fuzz_targets)
  if(NOT MOESCOPE_FUZZ)
    return()
  endif()
  file(GLOB _fuzzers CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/tests/fuzz/fuzz_*.cpp)
  set(_names)
  foreach(f ${_fuzzers})
    get_filename_component(name ${f} NAME_WE)
    add_executable(${name} ${f})
    target_include_directories(${name} PRIVATE ${CMAKE_SOURCE_DIR}/tests/fuzz)
    target_link_options(${name} PRIVATE -fsanitize=fuzzer)
    if(name MATCHES "_torch$")
      target_link_libraries(${name} PRIVATE moescope_core)
    else()
      target_link_libraries(${name} PRIVATE moescope_base)
    endif()
    list(APPEND _names ${name})
    if(NOT name MATCHES "_torch$")
      list(APPEND _base_names ${name})
    endif()
  endforeach()
  add_custom_target(fuzzers DEPENDS ${_names})
  # The torch-free targets alone (what CI builds: no LibTorch-heavy source is compiled a second time).
  add_custom_target(fuzzers_base DEPENDS ${_base_names})
  # The lists tools/fuzz.sh runs: one name per line.
  list(JOIN _names "\n" _text)
  file(WRITE ${CMAKE_BINARY_DIR}/fuzzers.txt "${_text}\n")
  list(JOIN _base_names "\n" _text)
  file(WRITE ${CMAKE_BINARY_DIR}/fuzzers_base.txt "${_text}\n")
endfunction()

# test_parsers: the unit tests of every reader of untrusted bytes (io: safetensors, shards, zip, torch pickle,
# reports, run folders, layouts, tensors; data: IDX, CIFAR-10, text, tokenizers, token ids, specs; util: JSON,
# errors, memory budget; metrics: geometry's NaN / zero-expert handling), built under sanitizers (MOESCOPE_SANITIZE
# or MOESCOPE_FUZZ) for CI, which cannot afford all of test_base a second time. tools/ci-hardening.sh runs it.
function(moescope_sanitizer_tests)
  if(NOT MOESCOPE_BUILD_TESTS OR NOT (MOESCOPE_FUZZ OR MOESCOPE_SANITIZE))
    return()
  endif()
  set(_src)
  foreach(t io/test_checkpoint io/test_hf_config io/test_layout io/test_report io/test_run io/test_safetensors
            io/test_tensor io/test_tensor_convert io/test_torch_pickle io/test_zip data/test_bytes data/test_image
            data/test_spec data/test_text data/test_token_ids data/test_tokenizer data/test_tokenizer_bpe
            data/test_tokenizer_text util/test_json util/test_error util/test_memory metrics/test_geometry)
    if(EXISTS ${CMAKE_SOURCE_DIR}/tests/${t}.cpp)
      list(APPEND _src ${CMAKE_SOURCE_DIR}/tests/${t}.cpp)
    endif()
  endforeach()
  add_executable(test_parsers ${_src} ${CMAKE_SOURCE_DIR}/tests/support/fixtures.cpp)
  target_include_directories(test_parsers PRIVATE ${CMAKE_SOURCE_DIR}/tests)
  target_link_libraries(test_parsers PRIVATE moescope_base GTest::gtest GTest::gtest_main)
  moescope_unity_build(test_parsers)
  # none of these tests runs the CLI (tests/support's run_moescope is linked, not called): no dependency on it
  target_compile_definitions(test_parsers PRIVATE MOESCOPE_SOURCE_DIR="${CMAKE_SOURCE_DIR}"
                             MOESCOPE_BIN_PATH="$<TARGET_FILE:moescope>")
endfunction()

# The kill -9 harness (tests/kill/kill_harness.py) as a ctest test: quick mode, labelled slow and kill (about four
# minutes on 2 cores); MOESCOPE_KILL_LONG=1 in the environment runs the long mode. Needs Debian's python3 with h5py
# and numpy, like the plot tests.
function(moescope_kill_test)
  if(NOT MOESCOPE_BUILD_TESTS OR MOESCOPE_FUZZ OR NOT EXISTS /usr/bin/python3)
    return()
  endif()
  execute_process(COMMAND /usr/bin/python3 -c "import h5py, numpy" RESULT_VARIABLE _deps OUTPUT_QUIET ERROR_QUIET)
  if(NOT _deps EQUAL 0)
    message(STATUS "moescope: /usr/bin/python3 lacks h5py or numpy: the kill harness is skipped")
    return()
  endif()
  add_test(NAME kill.harness COMMAND /usr/bin/python3 ${CMAKE_SOURCE_DIR}/tests/kill/kill_harness.py
           --moescope $<TARGET_FILE:moescope>)
  set_tests_properties(kill.harness PROPERTIES LABELS "slow;kill" TIMEOUT 1800 RUN_SERIAL TRUE)
endfunction()
