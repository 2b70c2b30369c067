# frame_bench: the frame reader on fed bytes vs memcpy of the same bytes.
# Measure in RelWithDebInfo (the release preset): build/release/bench/frame_bench
add_executable(frame_bench ${CMAKE_CURRENT_SOURCE_DIR}/frame_bench.c)
target_compile_definitions(frame_bench PRIVATE _GNU_SOURCE)
target_link_libraries(frame_bench PRIVATE amio_frame)
