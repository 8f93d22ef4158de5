{{ config(materialized='view') }}
-- SOP instances delivered with more than one content (content_hash) across all batches:
-- one row per version of each conflicting SOPInstanceUID. Raw keeps every copy; this
-- lists them so "latest row wins" is never trusted blindly. Holds UIDs (internal).
with source as (
    select * from {{ ref('stg_image_versions') }}
),

versions as (
    select
        sop_instance_uid,
        content_hash,
        count(*) as copies,
        min(source_key) as first_source_key,
        min(ingested_at) as first_ingested_at,
        max(ingested_at) as last_ingested_at
    from source
    where sop_instance_uid is not null and content_hash is not null
    group by sop_instance_uid, content_hash
),

counted as (
    select
        sop_instance_uid,
        content_hash,
        copies,
        first_source_key,
        first_ingested_at,
        last_ingested_at,
        count(*) over (partition by sop_instance_uid) as distinct_contents
    from versions
)

select
    sop_instance_uid,
    content_hash,
    distinct_contents,
    copies,
    first_source_key,
    first_ingested_at,
    last_ingested_at
from counted
where distinct_contents > 1
