-- Argo CD health check for kubescribe.io/SpeechModel.
--
-- Reads the kstatus conditions the operator writes (Ready, Reconciling, Stalled) and compares
-- status.observedGeneration with metadata.generation, so that a spec the operator has not seen
-- yet (a new version just pushed, or a dead operator) is Progressing, never Healthy.
-- Install: see argocd-cm.yaml beside this file (resource.customizations.health...).
local hs = {}

local function condition(conditions, kind)
  if conditions == nil then
    return nil
  end
  for _, c in ipairs(conditions) do
    if c.type == kind then
      return c
    end
  end
  return nil
end

local function describe(c, fallback)
  if c == nil then
    return fallback
  end
  local text = c.reason or fallback
  if c.message ~= nil and c.message ~= "" then
    text = text .. ": " .. c.message
  end
  return text
end

local generation = obj.metadata and obj.metadata.generation or nil
local status = obj.status

if status == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to report a status"
  return hs
end

if generation ~= nil and (status.observedGeneration == nil or status.observedGeneration < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
    .. " (observed " .. tostring(status.observedGeneration or "none") .. ")"
  return hs
end

local conditions = status.conditions
local stalled = condition(conditions, "Stalled")
local reconciling = condition(conditions, "Reconciling")
local ready = condition(conditions, "Ready")

if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = describe(stalled, "Stalled")
  return hs
end

if reconciling ~= nil and reconciling.status == "True" then
  hs.status = "Progressing"
  hs.message = describe(reconciling, "Reconciling")
  return hs
end

-- A Ready condition computed for an older generation says nothing about the current spec.
if ready ~= nil and generation ~= nil and ready.observedGeneration ~= nil
    and ready.observedGeneration < generation then
  hs.status = "Progressing"
  hs.message = "Ready was computed for generation " .. tostring(ready.observedGeneration)
  return hs
end

if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = describe(ready, "Ready")
  return hs
end

if ready ~= nil and ready.status == "False" then
  hs.status = "Degraded"
  hs.message = describe(ready, "NotReady")
  return hs
end

hs.status = "Progressing"
hs.message = describe(ready, "Waiting for the Ready condition")
return hs
