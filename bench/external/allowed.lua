-- Upgrades spread over the bench server's 1000 free sites: each costs one lookup, on either
-- checked route. Shared by run.sh and callgrind.sh.
local n = 0
local headers = { ["Content-Type"] = "application/x-www-form-urlencoded" }
request = function()
    n = n + 1
    return wrk.format("POST", nil, headers,
        "siteurl=" .. (2000 + n % 1000) .. "&plan=jetpack-scan&local_user=admin")
end
