"""The lake: files, local and S3 storage, ZIPs, the manifest, staging and publishing, quarantine."""
