-- Argo CD health of an Oxbow StreamJob (oxbow.dev/v1alpha1), from its status alone.
--
-- Runs in Argo CD's Lua 5.1 (gopher-lua) with the libraries a custom health check gets: base,
-- table and a safe os; no string or math library, so messages are built with `..` only.
--
--   Progressing  no status yet, a generation the operator has not observed, an operation under
--                way (Reconciling or Progressing True, or a transitional phase), or workers
--                still coming up
--   Degraded     the job needs the user (phase Failed, Stalled or UpgradeBlocked True), or
--                something is failing (Degraded True), or checkpoints are stale (output is
--                committed only with checkpoints, so nothing new reaches the sink)
--   Suspended    phase Suspended
--   Healthy      phase Running with Ready True; a LagHigh condition is named in the message
--
-- Precedence: an unobserved generation first (the status describes an older spec), then what
-- needs the user, then an operation under way, then failures of a running job.

local hs = {}

local function condition(type)
  if obj.status.conditions == nil then
    return nil
  end
  for _, c in ipairs(obj.status.conditions) do
    if c.type == type then
      return c
    end
  end
  return nil
end

local function isTrue(type)
  local c = condition(type)
  return c ~= nil and c.status == "True"
end

-- "Reason: message" of a condition, or of status.error, for messages that name the reason.
local function explain(c)
  local reason = c.reason or "Unknown"
  if c.message == nil or c.message == "" then
    return reason
  end
  return reason .. ": " .. c.message
end

-- "1/2 workers ready": ready workers out of the replicas the spec asks for.
local function workers()
  local want = obj.spec and obj.spec.replicas or obj.status.replicas or 0
  return tostring(obj.status.readyReplicas or 0) .. "/" .. tostring(want) .. " workers ready"
end

local function result(status, message)
  hs.status = status
  hs.message = message
  return hs
end

if obj.status == nil or obj.status.observedGeneration == nil then
  return result("Progressing", "Waiting for the Oxbow operator to report the job's status")
end

local generation = obj.metadata.generation
local observed = obj.status.observedGeneration
if generation ~= nil and observed ~= generation then
  return result("Progressing", "Waiting for the operator to observe generation " ..
    tostring(generation) .. " (the status describes generation " .. tostring(observed) .. ")")
end

local phase = obj.status.phase or "Pending"

-- What needs the user.
if phase == "Failed" then
  local why = condition("Stalled")
  if why == nil or why.status ~= "True" then
    why = obj.status.error
  end
  if why == nil then
    why = condition("Degraded")
  end
  if why == nil then
    return result("Degraded", "The job failed")
  end
  return result("Degraded", "The job failed: " .. explain(why))
end
if isTrue("UpgradeBlocked") then
  return result("Degraded", "Upgrade blocked: " .. explain(condition("UpgradeBlocked")))
end
if isTrue("Stalled") then
  return result("Degraded", "Stalled: " .. explain(condition("Stalled")))
end

-- An operation under way.
local transitional = {
  Pending = true, Deploying = true, Savepointing = true, Upgrading = true,
  Rescaling = true, Suspending = true, RollingBack = true,
}
local progress = nil
if isTrue("Reconciling") then
  progress = condition("Reconciling")
elseif isTrue("Progressing") then
  progress = condition("Progressing")
end
if progress ~= nil or transitional[phase] then
  local op = obj.status.operation
  if op ~= nil and op.type ~= nil then
    -- status.operation is written before each step is taken: it names the step under way.
    return result("Progressing", op.type .. " in progress (step " .. tostring(op.step) .. ")")
  end
  if phase == "Deploying" then
    return result("Progressing", "Deploying: " .. workers())
  end
  local taking = obj.status.savepoint and obj.status.savepoint.inProgress
  if phase == "Savepointing" and taking ~= nil then
    return result("Progressing", "Taking a savepoint (trigger " .. tostring(taking.trigger) .. ")")
  end
  local message = phase
  if progress ~= nil and progress.message ~= nil and progress.message ~= "" then
    message = progress.message
  end
  return result("Progressing", message)
end

-- Failures of a job that is not in an operation.
if isTrue("Degraded") then
  return result("Degraded", explain(condition("Degraded")))
end

if phase == "Suspended" then
  local message = "The job is suspended"
  local last = obj.status.savepoint and obj.status.savepoint.last
  if last ~= nil and last.path ~= nil then
    message = message .. "; its state is in savepoint " .. last.path
  end
  return result("Suspended", message)
end

if phase == "Running" then
  if isTrue("CheckpointStale") then
    return result("Degraded", explain(condition("CheckpointStale")) ..
      " (output is committed only with checkpoints)")
  end
  local ready = condition("Ready")
  if ready == nil or ready.status ~= "True" then
    local message = "Workers restoring"
    if ready ~= nil then
      message = explain(ready)
    end
    return result("Progressing", message .. " (" .. workers() .. ")")
  end
  local message = "Running, " .. workers()
  if isTrue("LagHigh") then
    message = message .. "; lag is high: " .. explain(condition("LagHigh"))
  end
  return result("Healthy", message)
end

return result("Progressing", "Phase " .. phase)
