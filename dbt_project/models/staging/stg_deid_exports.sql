{{ config(unique_key='sop_instance_uid') }}
{#- Incremental: this build's batches merged with the rows held for their keys (macros/increments.sql). #}
with source as (
    select * from {{ raw_rows('deid_exports') }}
),

renamed as (
    select
        {{ raw_column("SOPInstanceUID") }} as sop_instance_uid,
        image_pseudonym,
        deid_key,
        deid_bytes,
        status as export_status,
        pixel_deid_status,
        pixel_deid_method,
        reason as export_reason,
        source_key,
        batch_id,
        ingested_at
    from source
),

candidates as (
    {{ merge_with_existing('renamed', 'sop_instance_uid') }}
),

deduplicated as (
    select *
    from candidates
    where sop_instance_uid is not null
    -- the latest batch wrote the file; within a batch, the exported row of a repeated UID
    qualify row_number() over (
        partition by sop_instance_uid
        order by ingested_at desc, case when export_status = 'exported' then 0 else 1 end, source_key
    ) = 1
)

select * from deduplicated
