# Sourced by the bench scripts: builtin_job FILE GENERATOR SHARDS writes to FILE the
# built-in workload's join (left join 0..1 h, disorder 5 s, output none) with the left
# generator's body GENERATOR (`keys = ..., events = ...`) on SHARDS shards. Callers
# append what else they need (checkpoints) to FILE.
builtin_job() {
  cat >"$1" <<EOF_JOB
[left]
name = "impressions"
generator = { $2 }
[right]
name = "plays"
generator = {}
[join]
kind = "left"
lower_ms = 0
upper_ms = 3600000
max_out_of_orderness_ms = 5000
[output]
path = "none"
[engine]
shards = $3
EOF_JOB
}
