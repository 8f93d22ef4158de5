-- depends_on: {{ ref('internal_column_types') }}
{#- Columns and casts come from the internal_column_types seed (macros/seeds.sql). #}
with source as (
    select * from {{ source('raw', 'images') }}
),

renamed as (
    select
        {{ stage_columns('images') }},
        source_key,
        batch_id,
        ingested_at
    from source
),

deduplicated as (
    select *
    from renamed
    qualify row_number() over (partition by sop_instance_uid order by source_key, ingested_at desc) = 1
)

select * from deduplicated
