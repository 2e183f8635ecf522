-- kubescribe: route OpenAI audio uploads by their multipart `model` / `language` fields.
--
-- The OpenAI clients put the model name in the multipart body of POST /v1/audio/transcriptions
-- (and /translations); Gateway API routes match headers, paths and query parameters only. This
-- Envoy Lua filter walks the multipart parts (boundary by boundary, each part's headers parsed
-- for its Content-Disposition name) and copies the `model` field into `x-kubescribe-model`, or,
-- when the body names no model, the `language` field into `x-kubescribe-language`, then clears
-- the route cache so the HTTPRoutes' header matches choose the backend. A header the client set
-- itself is kept. Nothing else changes: the body goes upstream as it came.
--
-- Buffering: reading the body buffers it whole. Envoy refuses (413, its own plain-text page) a
-- body above the listener's per-connection buffer limit (default 1 MiB), so that limit must be
-- raised above the runtime's upload limit (KUBESCRIBE_MAX_UPLOAD_MB, 25 MiB by default): 32 MiB
-- here (Envoy Gateway: ClientTrafficPolicy `connection.bufferLimit`). A request whose
-- Content-Length is above MAX_BODY_BYTES is not buffered at all: it streams on, routed by its
-- headers or path, and the runtime answers its own OpenAI-shaped 413. Keep MAX_BODY_BYTES at or
-- below the buffer limit.
--
-- Used as shipped by the tests (cluster/gateways.py loads this file into Envoy); with Envoy
-- Gateway, envoy-extension-policy.yaml beside it attaches the same code to a Gateway.

local MAX_BODY_BYTES = 32 * 1024 * 1024
local ROUTED_PATHS = { ["/v1/audio/transcriptions"] = true, ["/v1/audio/translations"] = true }

-- The boundary parameter of a multipart/form-data Content-Type (RFC 7578), quoted or not.
local function boundary_of(content_type)
  if content_type == nil then
    return nil
  end
  local lower = string.lower(content_type)
  if string.find(lower, "multipart/form-data", 1, true) ~= 1 then
    return nil
  end
  local quoted = string.match(content_type, '[Bb][Oo][Uu][Nn][Dd][Aa][Rr][Yy]="([^"]+)"')
  if quoted then
    return quoted
  end
  return string.match(content_type, "[Bb][Oo][Uu][Nn][Dd][Aa][Rr][Yy]=([^;%s]+)")
end

-- The form field name of a part, from its headers block.
local function field_name(part_headers)
  for line in string.gmatch(part_headers, "[^\r\n]+") do
    local header, value = string.match(line, "^([^:]+):%s*(.*)$")
    if header and string.lower(header) == "content-disposition" then
      return string.match(value, ';%s*name="([^"]*)"') or string.match(value, ";%s*name=([^;%s]+)")
    end
  end
  return nil
end

-- The values of the wanted text fields: walks the parts from delimiter to delimiter, reading
-- each part's headers; a part's content (an audio file too) is skipped, never scanned for names.
local function form_fields(body, boundary, wanted)
  local found = {}
  local delimiter = "--" .. boundary
  local pos = string.find(body, delimiter, 1, true)
  if pos == nil then
    return found
  end
  pos = pos + #delimiter
  while true do
    if string.sub(body, pos, pos + 1) == "--" then
      return found -- the close delimiter
    end
    -- The delimiter line ends with CRLF (transport padding before it is allowed).
    local line_end = string.find(body, "\r\n", pos, true)
    if line_end == nil then
      return found
    end
    local headers_end = string.find(body, "\r\n\r\n", line_end, true)
    if headers_end == nil then
      return found
    end
    local headers = string.sub(body, line_end + 2, headers_end - 1)
    local content_start = headers_end + 4
    local next_delimiter = string.find(body, "\r\n" .. delimiter, content_start - 2, true)
    if next_delimiter == nil then
      return found -- truncated: no closing delimiter
    end
    local name = field_name(headers)
    if name and wanted[name] and found[name] == nil then
      found[name] = string.sub(body, content_start, next_delimiter - 1)
    end
    pos = next_delimiter + 2 + #delimiter
  end
end

local function trim(value)
  return (string.gsub(value, "^%s*(.-)%s*$", "%1"))
end

function envoy_on_request(handle)
  local headers = handle:headers()
  local path = string.match(headers:get(":path") or "", "^[^?]*")
  if headers:get(":method") ~= "POST" or not ROUTED_PATHS[path] then
    return
  end
  if headers:get("x-kubescribe-model") or headers:get("x-kubescribe-language") then
    return -- the client chose
  end
  local boundary = boundary_of(headers:get("content-type"))
  if boundary == nil then
    return
  end
  local length = tonumber(headers:get("content-length") or "")
  if length ~= nil and length > MAX_BODY_BYTES then
    return -- too large to buffer: routed by headers or path, the runtime answers 413
  end
  local body = handle:body()
  if body == nil then
    return
  end
  local fields = form_fields(body:getBytes(0, body:length()), boundary,
    { model = true, language = true })
  -- The headers handle from before body() is no longer valid: fetch it again.
  headers = handle:headers()
  local model = fields.model and trim(fields.model) or ""
  local language = fields.language and trim(fields.language) or ""
  if model ~= "" then
    headers:replace("x-kubescribe-model", model)
  elseif language ~= "" then
    headers:replace("x-kubescribe-language", string.lower(language))
  else
    return
  end
  handle:clearRouteCache()
end

function envoy_on_response(handle)
end
