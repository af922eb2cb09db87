# Print Autoheal's quicklinks (Command Center, console, audit, metrics, Grafana, Prometheus,
# Alertmanager) and open them in the default browser.
#   powershell -File deploy\windows\links.ps1 [-BaseUrl https://autoheal.example.org] [-NoOpen]
param([string]$BaseUrl = "", [switch]$NoOpen)
$ErrorActionPreference = "Stop"
Set-Location (Join-Path $PSScriptRoot "..\..")
$python = if (Test-Path ".venv\Scripts\python.exe") { ".venv\Scripts\python.exe" } else { "python" }
$arguments = @("manage.py", "autoheal_links")
if ($BaseUrl) { $arguments += @("--base-url", $BaseUrl) }
if (-not $NoOpen) { $arguments += "--open" }
& $python @arguments
exit $LASTEXITCODE
