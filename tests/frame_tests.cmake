# Framing tests (frame/), included by tests/CMakeLists.txt.
amio_check_test(check_frame_reader SOURCES check_frame_reader.c LIBS amio_frame LABELS frame)
amio_check_test(check_frame_writer SOURCES check_frame_writer.c LIBS amio_frame
                LABELS frame threads)
# Its seeded capacity walk takes up to 90 s under ASan on a busy machine.
amio_check_test(check_line_reader SOURCES check_line_reader.c LIBS amio_frame TIMEOUT 300
                LABELS frame)

# The libFuzzer harness, built with a replay main() so the seed corpus runs in
# every build (the fuzzing itself is `make fuzz`, clang only).
add_executable(fuzz_frame_reader_replay fuzz_frame_reader.c)
target_compile_definitions(fuzz_frame_reader_replay PRIVATE _GNU_SOURCE AMIO_FUZZ_REPLAY)
target_link_libraries(fuzz_frame_reader_replay PRIVATE amio_frame)
file(GLOB _amio_frame_seeds ${CMAKE_CURRENT_SOURCE_DIR}/corpus/frame/*)
add_test(NAME fuzz_frame_reader_replay COMMAND fuzz_frame_reader_replay ${_amio_frame_seeds})
set_tests_properties(fuzz_frame_reader_replay PROPERTIES TIMEOUT 60 LABELS frame)
amio_check_test(check_frame_attack SOURCES check_frame_attack.c LIBS amio_frame TIMEOUT 300 LABELS frame)
