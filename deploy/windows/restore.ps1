# Restore an Autoheal backup on Windows, then verify the audit trail.
#   powershell -File deploy\windows\restore.ps1 -Path D:\autoheal-backups\autoheal-20261127T031700Z [-Force]
# Same as deploy\backup\restore.ps1, which does the work through manage.py autoheal_restore.
param(
    [Parameter(Mandatory = $true)][string]$Path,
    [switch]$Force,
    [string]$PrometheusData = ""
)
& (Join-Path $PSScriptRoot "..\backup\restore.ps1") -Path $Path -Force:$Force -PrometheusData $PrometheusData
exit $LASTEXITCODE
