#!/bin/sh
# The fixture of the worker tests: token shards of a small text and a student of the teacher
# (window 16, 2 sinks, chunk 8), made once into DIR.
# usage: worker_fixture.sh XTRAIN TEACHER SOURCE_DIR DIR
set -u
xtrain=$1 teacher=$2 src=$3 dir=$4
[ -f "$teacher" ] || { echo "FAIL: $teacher missing (run deploy/fetch-teacher.sh)"; exit 1; }
[ -f "$dir/ready" ] && { echo "ok: the fixture is in $dir"; exit 0; }
rm -rf "$dir" && mkdir -p "$dir/in" || exit 1
cp "$src/tests/data/english.txt" "$src/docs/method.md" "$dir/in/" || exit 1
"$xtrain" prepare --tokenizer "$teacher" --out "$dir/data" --val-fraction 0 "$dir/in" || exit 1
"$xtrain" init --teacher "$teacher" --out "$dir/student" --window 16 --sinks 2 --chunk 8 || exit 1
touch "$dir/ready"
echo "ok: the fixture is in $dir"
