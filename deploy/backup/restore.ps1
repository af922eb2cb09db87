# Restore a backup made by backup.ps1, then verify the audit trail's hash chain.
#   powershell -File deploy\backup\restore.ps1 -Path D:\autoheal-backups\autoheal-20261127T031700Z [-Force]
# Stop Autoheal (the run window or its service) first, restore, then start it again.
param(
    [Parameter(Mandatory = $true)][string]$Path,
    [switch]$Force,
    [string]$PrometheusData = ""
)
$ErrorActionPreference = "Stop"
Set-Location (Join-Path $PSScriptRoot "..\..")
$python = if (Test-Path ".venv\Scripts\python.exe") { ".venv\Scripts\python.exe" } else { "python" }
$arguments = @("manage.py", "autoheal_restore", "--input", $Path)
if ($Force) { $arguments += "--force" }
if ($PrometheusData) { $arguments += @("--prometheus-data", $PrometheusData) }
& $python @arguments
if ($LASTEXITCODE -ne 0) { exit $LASTEXITCODE }
& $python manage.py audit_verify
exit $LASTEXITCODE
