{{ config(unique_key='sop_instance_uid') }}
with source as (
    select * from {{ raw_rows('previews') }}
),

renamed as (
    select
        {{ raw_column("SOPInstanceUID") }} as sop_instance_uid,
        preview_key,
        preview_bytes,
        preview_width,
        preview_height,
        frame_index,
        pixel_deid_status,
        pixel_deid_method,
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
    qualify row_number() over (partition by sop_instance_uid order by source_key, ingested_at desc) = 1
)

select * from deduplicated
