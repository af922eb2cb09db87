# Back up Autoheal into a new timestamped directory and keep the newest $Keep backups.
#   powershell -File deploy\backup\backup.ps1 [-Root D:\autoheal-backups] [-Keep 14] [-- extra options]
# The work is done by manage.py autoheal_backup (database, JSONL mirror, Prometheus snapshot,
# manifest); this only names the directory and prunes old ones. Schedule it with Task Scheduler.
param(
    [string]$Root = $(if ($env:AUTOHEAL_BACKUP_ROOT) { $env:AUTOHEAL_BACKUP_ROOT } else { "var\backups" }),
    [int]$Keep = 14,
    [Parameter(ValueFromRemainingArguments = $true)][string[]]$Extra = @()
)
$ErrorActionPreference = "Stop"
Set-Location (Join-Path $PSScriptRoot "..\..")
$python = if (Test-Path ".venv\Scripts\python.exe") { ".venv\Scripts\python.exe" } else { "python" }
$stamp = (Get-Date).ToUniversalTime().ToString("yyyyMMddTHHmmssZ")
$target = Join-Path $Root "autoheal-$stamp"
New-Item -ItemType Directory -Force -Path $Root | Out-Null
& $python manage.py autoheal_backup --output $target @Extra
if ($LASTEXITCODE -ne 0) { exit $LASTEXITCODE }

# Only complete backups (with a manifest) count; the newest $Keep stay.
Get-ChildItem -Path $Root -Directory -Filter "autoheal-*" |
    Where-Object { Test-Path (Join-Path $_.FullName "manifest.json") } |
    Sort-Object Name -Descending |
    Select-Object -Skip $Keep |
    ForEach-Object { Remove-Item -Recurse -Force $_.FullName; Write-Output "removed old backup $($_.FullName)" }
